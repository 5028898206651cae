//! Compiles `proto/ewpm/**.proto` with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set to `OUT_DIR` for gRPC reflection. The messages in [`REST_MESSAGES`] also get
//! serde and utoipa derives behind the crate's `rest` feature.

use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

/// Messages the REST edge answers with as they are: their JSON there is their proto3 JSON
/// mapping: each field under its `json_name` (lowerCamelCase), default values emitted,
/// Timestamps as RFC 3339 UTC strings (see `ewpm_proto::rest`). With feature `rest`, each
/// derives `serde::Serialize` and `utoipa::ToSchema`. [`is_timestamp`] admits only fields whose
/// serde JSON is their proto JSON, so a field that would differ (an int64 is a string in proto
/// JSON, an enum its value's name) fails this build rather than silently changing REST JSON.
const REST_MESSAGES: &[&str] = &[
    "ewpm.challenge.v1.Goal",
    "ewpm.incentive.v1.Award",
    "ewpm.incentive.v1.ListAwardsResponse",
    "ewpm.progress.v1.SubmitProgressResponse",
];

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect(&root.join("ewpm"), &mut files);
    println!("cargo:rerun-if-changed={}", root.join("ewpm").display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&root]).expect("compile protos");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("ewpm_descriptor.bin"), fds.encode_to_vec())
        .expect("write descriptor set");
    let mut builder = tonic_prost_build::configure().build_client(true).build_server(true);
    let rest = rest_attributes(&fds);
    for (path, attribute) in rest.messages {
        builder = builder.message_attribute(path, attribute);
    }
    for (path, attribute) in rest.fields {
        builder = builder.field_attribute(path, attribute);
    }
    builder.compile_fds(fds).expect("generate code");
}

/// Attributes by proto path (`.pkg.Message`, `.pkg.Message.field`).
struct RestAttributes {
    messages: Vec<(String, String)>,
    fields: Vec<(String, String)>,
}

/// The derives of [`REST_MESSAGES`] and the serde attributes of their fields.
fn rest_attributes(fds: &FileDescriptorSet) -> RestAttributes {
    let mut defined = Vec::new();
    for file in &fds.file {
        collect_messages(file.package(), &file.message_type, &mut defined);
    }
    let mut rest = RestAttributes { messages: Vec::new(), fields: Vec::new() };
    for name in REST_MESSAGES {
        let message = defined
            .iter()
            .find(|(full, _)| full == name)
            .map(|(_, m)| *m)
            .unwrap_or_else(|| panic!("REST_MESSAGES names {name}, which no .proto defines"));
        rest.messages.push((
            format!(".{name}"),
            r#"#[cfg_attr(feature = "rest", derive(serde::Serialize, utoipa::ToSchema))]"#.into(),
        ));
        for field in &message.field {
            let json_name = field
                .json_name
                .as_deref()
                .unwrap_or_else(|| panic!("{name}.{} has no json_name", field.name()));
            let attribute = if is_timestamp(name, field) {
                format!(
                    r#"#[cfg_attr(feature = "rest", serde(rename = "{json_name}", serialize_with = "crate::rest::timestamp"), schema(value_type = String, format = DateTime))]"#
                )
            } else {
                format!(r#"#[cfg_attr(feature = "rest", serde(rename = "{json_name}"))]"#)
            };
            rest.fields.push((format!(".{name}.{}", field.name()), attribute));
        }
    }
    rest
}

/// Whether `field` of the REST message `message` is a Timestamp (serialized by
/// `crate::rest::timestamp`); panics, naming the field, when its serde JSON would not be its
/// proto JSON.
fn is_timestamp(message: &str, field: &FieldDescriptorProto) -> bool {
    let unfit = |why: &str| -> ! {
        panic!(
            "{message}.{}: {why}, so its serde JSON would not be its proto JSON; map the \
             message by hand in the REST edge and take it out of REST_MESSAGES",
            field.name()
        )
    };
    if field.oneof_index.is_some() {
        unfit("a oneof member (or proto3 optional field) is left out of proto JSON when unset");
    }
    let repeated = field.label() == Label::Repeated;
    match field.r#type() {
        Type::String | Type::Bool | Type::Double | Type::Float => false,
        Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => false,
        Type::Message if field.type_name() == ".google.protobuf.Timestamp" => {
            if repeated {
                unfit("a repeated Timestamp has no serializer here");
            }
            true
        }
        Type::Message if REST_MESSAGES.iter().any(|m| field.type_name() == format!(".{m}")) => {
            false
        }
        Type::Message => unfit("it is a message outside REST_MESSAGES (or a map)"),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
            unfit("a 64-bit integer is a string in proto JSON")
        }
        Type::Enum => unfit("an enum is its value's name in proto JSON"),
        Type::Bytes => unfit("bytes are base64 in proto JSON"),
        Type::Group => unfit("groups have no proto3 JSON"),
    }
}

/// Every message of a file, nested ones included, by full name.
fn collect_messages<'a>(
    scope: &str,
    messages: &'a [DescriptorProto],
    out: &mut Vec<(String, &'a DescriptorProto)>,
) {
    for message in messages {
        let full = format!("{scope}.{}", message.name());
        collect_messages(&full, &message.nested_type, out);
        out.push((full, message));
    }
}
