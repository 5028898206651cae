//! Builds the challenge service from settings, ready to mount.

use ewpm_kit::{clock::SharedClock, settings::GrpcSettings};
use ewpm_proto::challenge::v1::challenge_service_server::ChallengeServiceServer;
use sea_orm::DatabaseConnection;

use crate::{
    grpc::ChallengeGrpc, service::Challenges, standings::Standings, store::ChallengeStore,
};

/// The tonic service of the challenge service over `db` (migrated), with the message limit of
/// `grpc`.
pub fn build(
    db: DatabaseConnection,
    clock: SharedClock,
    grpc: &GrpcSettings,
) -> ChallengeServiceServer<ChallengeGrpc> {
    build_with(db, clock, grpc, Standings::none())
}

/// [`build`], with the user's standing in active listings read through `standings`.
pub fn build_with(
    db: DatabaseConnection,
    clock: SharedClock,
    grpc: &GrpcSettings,
    standings: Standings,
) -> ChallengeServiceServer<ChallengeGrpc> {
    let challenges = Challenges::new(ChallengeStore::new(db), clock);
    ChallengeServiceServer::new(ChallengeGrpc::new(challenges, standings))
        .max_decoding_message_size(grpc.max_message_bytes)
}
