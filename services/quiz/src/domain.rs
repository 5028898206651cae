//! Quizzes, questions, answers and the scoring rule: validated values and pure functions, no
//! I/O.

use ewpm_kit::{
    auth::{Caller, Role},
    error::{FieldViolation, Violations},
};
use serde::{Deserialize, Serialize};

/// Most questions in a quiz.
pub const MAX_QUESTIONS: usize = 100;
/// Fewest and most choices of a choice question.
pub const CHOICES: std::ops::RangeInclusive<usize> = 2..=8;
/// Longest choice, accepted answer or text answer, in characters.
pub const MAX_ANSWER_CHARS: usize = 200;

/// The kinds of question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Exactly one choice, one of them correct.
    SingleChoice,
    /// One or more choices, correct when exactly the correct set.
    MultipleChoice,
    /// One choice, nothing correct, nothing scored.
    Poll,
    /// Free text matched against accepted answers.
    ShortText,
}

impl Kind {
    /// Whether the question offers choices.
    pub fn has_choices(self) -> bool {
        !matches!(self, Kind::ShortText)
    }
}

/// A validated question (what the author wrote, answers included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Question id (UUID), minted at creation.
    pub id: String,
    /// The question.
    pub text: String,
    /// Its kind.
    pub kind: Kind,
    /// Choices (choice kinds).
    pub choices: Vec<String>,
    /// Indexes of the correct choices, ascending.
    pub correct: Vec<usize>,
    /// Accepted answers (short text), as written.
    pub accepted: Vec<String>,
    /// Points of a correct answer.
    pub points: u32,
    /// Multiplies points and penalty.
    pub multiplier: f64,
    /// Points taken for a wrong answer.
    pub wrong_penalty: u32,
    /// Seconds it stays open.
    pub time_limit_secs: u32,
}

/// A question as the author sent it, before validation.
#[derive(Debug, Clone, Default)]
pub struct QuestionInput {
    /// The question text.
    pub text: String,
    /// Its kind, if a known one.
    pub kind: Option<Kind>,
    /// Choices.
    pub choices: Vec<String>,
    /// Correct choice indexes.
    pub correct: Vec<i32>,
    /// Accepted answers.
    pub accepted: Vec<String>,
    /// Points (unset: the default).
    pub points: Option<i32>,
    /// Multiplier (unset: 1).
    pub multiplier: Option<f64>,
    /// Wrong-answer penalty.
    pub wrong_penalty: i32,
    /// Time limit (0: the default 20 s).
    pub time_limit_secs: i32,
}

fn trimmed(raw: &str, field: &str, max: usize) -> Result<String, FieldViolation> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(FieldViolation::new(field, format!("must be at most {max} characters")));
    }
    if t.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "must not contain control characters"));
    }
    Ok(t.to_string())
}

/// A quiz title: 1 to 200 characters after trimming.
pub fn title(raw: &str) -> Result<String, FieldViolation> {
    trimmed(raw, "title", 200)
}

/// A team name: 1 to 64 characters after trimming.
pub fn team(raw: &str) -> Result<String, FieldViolation> {
    trimmed(raw, "team", 64)
}

/// Validates one question (at `field`, e.g. `questions[2]`), reporting every bad field.
pub fn question(
    input: &QuestionInput,
    field: &str,
    id: String,
    v: &mut Violations,
) -> Option<Question> {
    let at = |name: &str| format!("{field}.{name}");
    let text = v.check(trimmed(&input.text, &at("text"), 500));
    let Some(kind) = input.kind else {
        v.push(FieldViolation::new(
            at("kind"),
            "must be single_choice, multiple_choice, poll or short_text",
        ));
        return None;
    };
    let mut ok = text.is_some();
    let mut choices = Vec::new();
    let mut correct = Vec::new();
    let mut accepted = Vec::new();
    if kind.has_choices() {
        if !CHOICES.contains(&input.choices.len()) {
            v.push(FieldViolation::new(at("choices"), "must have 2 to 8 choices"));
            ok = false;
        }
        for (i, c) in input.choices.iter().enumerate() {
            match trimmed(c, &format!("{field}.choices[{i}]"), MAX_ANSWER_CHARS) {
                Ok(c) if choices.iter().any(|o: &String| o.to_lowercase() == c.to_lowercase()) => {
                    v.push(FieldViolation::new(
                        format!("{field}.choices[{i}]"),
                        "must differ from the other choices",
                    ));
                    ok = false;
                }
                Ok(c) => choices.push(c),
                Err(e) => {
                    v.push(e);
                    ok = false;
                }
            }
        }
        for &i in &input.correct {
            match usize::try_from(i) {
                Ok(i) if i < input.choices.len() && !correct.contains(&i) => correct.push(i),
                _ => {
                    v.push(FieldViolation::new(
                        at("correct_choices"),
                        "must be distinct indexes into choices",
                    ));
                    ok = false;
                }
            }
        }
        correct.sort_unstable();
        let wanted = match kind {
            Kind::SingleChoice if correct.len() != 1 => Some("must name exactly one choice"),
            Kind::MultipleChoice if correct.is_empty() => Some("must name at least one choice"),
            Kind::Poll if !correct.is_empty() => Some("must be empty for a poll"),
            _ => None,
        };
        if let Some(why) = wanted {
            v.push(FieldViolation::new(at("correct_choices"), why));
            ok = false;
        }
        if !input.accepted.is_empty() {
            v.push(FieldViolation::new(at("accepted_answers"), "is for short_text questions only"));
            ok = false;
        }
    } else {
        if !input.choices.is_empty() || !input.correct.is_empty() {
            v.push(FieldViolation::new(
                at("choices"),
                "must be empty for short_text questions (with correct_choices)",
            ));
            ok = false;
        }
        if !(1..=20).contains(&input.accepted.len()) {
            v.push(FieldViolation::new(at("accepted_answers"), "must have 1 to 20 answers"));
            ok = false;
        }
        for (i, a) in input.accepted.iter().enumerate() {
            match trimmed(a, &format!("{field}.accepted_answers[{i}]"), MAX_ANSWER_CHARS) {
                Ok(a) => accepted.push(a),
                Err(e) => {
                    v.push(e);
                    ok = false;
                }
            }
        }
    }
    let points = match (input.points, kind) {
        (None | Some(0), Kind::Poll) => Some(0),
        (Some(_), Kind::Poll) => {
            v.push(FieldViolation::new(at("points"), "must be 0 for a poll"));
            None
        }
        (None, _) => Some(1000),
        (Some(p), _) => match u32::try_from(p) {
            Ok(p) if p <= 10_000 => Some(p),
            _ => {
                v.push(FieldViolation::new(at("points"), "must be 0 to 10,000"));
                None
            }
        },
    };
    let multiplier = input.multiplier.unwrap_or(1.0);
    if !(multiplier.is_finite() && (0.0..=10.0).contains(&multiplier)) {
        v.push(FieldViolation::new(at("multiplier"), "must be 0 to 10"));
        ok = false;
    }
    let wrong_penalty = match u32::try_from(input.wrong_penalty) {
        Ok(p) if p <= 10_000 && (p == 0 || kind != Kind::Poll) => Some(p),
        _ => {
            v.push(FieldViolation::new(at("wrong_penalty"), "must be 0 to 10,000 (0 for a poll)"));
            None
        }
    };
    let time_limit_secs = match input.time_limit_secs {
        0 => Some(20),
        t => match u32::try_from(t) {
            Ok(t) if (5..=600).contains(&t) => Some(t),
            _ => {
                v.push(FieldViolation::new(at("time_limit_secs"), "must be 5 to 600"));
                None
            }
        },
    };
    let (Some(text), Some(points), Some(wrong_penalty), Some(time_limit_secs), true) =
        (text, points, wrong_penalty, time_limit_secs, ok)
    else {
        return None;
    };
    Some(Question {
        id,
        text,
        kind,
        choices,
        correct,
        accepted,
        points,
        multiplier,
        wrong_penalty,
        time_limit_secs,
    })
}

/// The scoring rules of a session (validated, defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scoring {
    /// Full points for every correct answer: no speed factor, no streak bonus.
    pub accuracy_only: bool,
    /// Share of the points speed decides.
    pub speed_weight: f64,
    /// Bonus share per consecutive correct answer before this one.
    pub streak_bonus: f64,
    /// Most consecutive answers the bonus counts.
    pub streak_cap: u32,
    /// Longest reveal-to-connection delay that does not count, in milliseconds.
    pub delivery_grace_ms: u32,
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            accuracy_only: false,
            speed_weight: 0.5,
            streak_bonus: 0.1,
            streak_cap: 5,
            delivery_grace_ms: 2000,
        }
    }
}

/// Scoring rules as a host sends them (unset: the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoringInput {
    /// See [`Scoring::accuracy_only`].
    pub accuracy_only: bool,
    /// See [`Scoring::speed_weight`].
    pub speed_weight: Option<f64>,
    /// See [`Scoring::streak_bonus`].
    pub streak_bonus: Option<f64>,
    /// See [`Scoring::streak_cap`].
    pub streak_cap: Option<i32>,
    /// See [`Scoring::delivery_grace_ms`].
    pub delivery_grace_ms: Option<i32>,
}

/// Validates scoring rules (fields under `scoring.`).
pub fn scoring(input: ScoringInput, v: &mut Violations) -> Scoring {
    let d = Scoring::default();
    let share = |x: Option<f64>, name: &str, default: f64, v: &mut Violations| match x {
        None => default,
        Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => x,
        Some(_) => {
            v.push(FieldViolation::new(format!("scoring.{name}"), "must be 0 to 1"));
            default
        }
    };
    let count = |x: Option<i32>, name: &str, max: u32, default: u32, v: &mut Violations| match x {
        None => default,
        Some(x) => match u32::try_from(x) {
            Ok(x) if x <= max => x,
            _ => {
                v.push(FieldViolation::new(
                    format!("scoring.{name}"),
                    format!("must be 0 to {max}"),
                ));
                default
            }
        },
    };
    Scoring {
        accuracy_only: input.accuracy_only,
        speed_weight: share(input.speed_weight, "speed_weight", d.speed_weight, v),
        streak_bonus: share(input.streak_bonus, "streak_bonus", d.streak_bonus, v),
        streak_cap: count(input.streak_cap, "streak_cap", 20, d.streak_cap, v),
        delivery_grace_ms: count(
            input.delivery_grace_ms,
            "delivery_grace_ms",
            10_000,
            d.delivery_grace_ms,
            v,
        ),
    }
}

/// A participant's answer, validated against its question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Given {
    /// Choice indexes, ascending, distinct.
    Choices(Vec<usize>),
    /// Text, trimmed.
    Text(String),
}

impl Given {
    /// How it is stored (`answer` column): `1` / `0,3` for choices, the text as written.
    pub fn stored(&self) -> String {
        match self {
            Given::Choices(c) => c.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            Given::Text(t) => t.clone(),
        }
    }

    /// The choice indexes of a stored choice answer (empty for text or garbage).
    pub fn stored_choices(stored: &str) -> Vec<usize> {
        stored.split(',').filter_map(|c| c.parse().ok()).collect()
    }
}

/// Checks an answer's shape against `question` (fields under `answer.`).
pub fn given(question: &Question, choices: &[i32], text: &str) -> Result<Given, FieldViolation> {
    if question.kind.has_choices() {
        if !text.is_empty() {
            return Err(FieldViolation::new("answer.text", "must be empty for a choice question"));
        }
        let mut picked = Vec::with_capacity(choices.len());
        for &c in choices {
            match usize::try_from(c) {
                Ok(c) if c < question.choices.len() && !picked.contains(&c) => picked.push(c),
                _ => {
                    return Err(FieldViolation::new(
                        "answer.choices",
                        format!(
                            "must be distinct indexes 0 to {} of the question's choices",
                            question.choices.len() - 1
                        ),
                    ));
                }
            }
        }
        let single = question.kind != Kind::MultipleChoice;
        if picked.is_empty() || (single && picked.len() != 1) {
            let why = if single { "must name exactly one choice" } else { "must name a choice" };
            return Err(FieldViolation::new("answer.choices", why));
        }
        picked.sort_unstable();
        Ok(Given::Choices(picked))
    } else {
        if !choices.is_empty() {
            return Err(FieldViolation::new(
                "answer.choices",
                "must be empty for a short_text question",
            ));
        }
        trimmed(text, "answer.text", MAX_ANSWER_CHARS).map(Given::Text)
    }
}

/// Whether `given` is correct (`None` for a poll).
pub fn is_correct(question: &Question, given: &Given) -> Option<bool> {
    match (question.kind, given) {
        (Kind::Poll, _) => None,
        (Kind::ShortText, Given::Text(t)) => {
            Some(question.accepted.iter().any(|a| fold(a) == fold(t)))
        }
        (_, Given::Choices(c)) => Some(*c == question.correct),
        _ => Some(false),
    }
}

/// Text as answers are compared: trimmed, inner runs of whitespace as one space, lowercase.
fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// What an answer earns and does to the streak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Earned {
    /// Points (whole; negative for a penalty).
    pub points: f64,
    /// The participant's streak after it.
    pub streak: u32,
}

/// Scores an answer (see the README's "Quiz scoring"):
///
/// - a poll earns nothing and leaves the streak alone;
/// - a wrong answer costs `wrong_penalty × multiplier` and ends the streak;
/// - a correct one earns `points × multiplier × speed × (1 + streak)`, where
///   `speed = 1 − speed_weight × min(elapsed / time limit, 1)` and
///   `streak = streak_bonus × min(correct answers in a row before it, streak_cap)`;
///   in accuracy-only mode both factors are 1. Rounded to a whole number.
///
/// `streak_before` counts the correct answers in a row that end at the previous question.
pub fn score(
    question: &Question,
    rules: &Scoring,
    correct: Option<bool>,
    elapsed_ms: i64,
    streak_before: u32,
) -> Earned {
    match correct {
        None => Earned { points: 0.0, streak: streak_before },
        Some(false) => Earned {
            points: -(f64::from(question.wrong_penalty) * question.multiplier).round(),
            streak: 0,
        },
        Some(true) => {
            let base = f64::from(question.points) * question.multiplier;
            let points = if rules.accuracy_only {
                base
            } else {
                let limit_ms = f64::from(question.time_limit_secs) * 1000.0;
                #[allow(clippy::cast_precision_loss)]
                let t = (elapsed_ms.max(0) as f64 / limit_ms).min(1.0);
                let speed = 1.0 - rules.speed_weight * t;
                let streak = rules.streak_bonus * f64::from(streak_before.min(rules.streak_cap));
                base * speed * (1.0 + streak)
            };
            Earned { points: points.round(), streak: streak_before.saturating_add(1) }
        }
    }
}

/// Who may author and host quizzes of `employer` (`None`: platform-wide): admins any,
/// employer admins their own employer's.
pub fn can_author(caller: &Caller, employer: Option<&str>) -> bool {
    match caller.role {
        Role::Admin => true,
        Role::EmployerAdmin => employer.is_some() && caller.employer_id.as_deref() == employer,
        Role::Employee | Role::Ingest => false,
    }
}

/// Who may see and play quizzes of `employer`: everyone a platform-wide one, that employer's
/// people (and admins) otherwise.
pub fn can_play(caller: &Caller, employer: Option<&str>) -> bool {
    caller.is_admin() || employer.is_none() || caller.employer_id.as_deref() == employer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: Kind) -> Question {
        Question {
            id: "q".into(),
            text: "?".into(),
            kind,
            choices: vec!["a".into(), "b".into(), "c".into()],
            correct: if kind == Kind::Poll { vec![] } else { vec![1] },
            accepted: vec!["Paris".into()],
            points: 1000,
            multiplier: 1.0,
            wrong_penalty: 100,
            time_limit_secs: 20,
        }
    }

    #[test]
    fn speed_streak_penalty_and_accuracy_only_follow_the_documented_rule() {
        let rules = Scoring::default();
        let single = q(Kind::SingleChoice);
        // At once, no streak: full points; at the limit: half; beyond it: still half.
        assert_eq!(score(&single, &rules, Some(true), 0, 0).points, 1000.0);
        assert_eq!(score(&single, &rules, Some(true), 20_000, 0).points, 500.0);
        assert_eq!(score(&single, &rules, Some(true), 90_000, 0).points, 500.0);
        assert_eq!(score(&single, &rules, Some(true), 10_000, 0).points, 750.0);
        // Third correct in a row: +20 %; the bonus stops at the cap.
        assert_eq!(score(&single, &rules, Some(true), 0, 2), Earned { points: 1200.0, streak: 3 });
        assert_eq!(score(&single, &rules, Some(true), 0, 9).points, 1500.0);
        // Wrong: the penalty, times the multiplier; the streak ends.
        let double = Question { multiplier: 2.0, ..single.clone() };
        assert_eq!(score(&double, &rules, Some(false), 0, 4), Earned { points: -200.0, streak: 0 });
        assert_eq!(score(&double, &rules, Some(true), 0, 0).points, 2000.0);
        // Polls score nothing and keep the streak.
        assert_eq!(score(&q(Kind::Poll), &rules, None, 0, 3), Earned { points: 0.0, streak: 3 });
        let accuracy = Scoring { accuracy_only: true, ..rules };
        assert_eq!(score(&single, &accuracy, Some(true), 19_000, 4).points, 1000.0);
    }

    #[test]
    fn answers_are_checked_against_their_question() {
        let single = q(Kind::SingleChoice);
        assert_eq!(given(&single, &[1], ""), Ok(Given::Choices(vec![1])));
        assert!(given(&single, &[0, 1], "").is_err());
        assert!(given(&single, &[3], "").is_err());
        assert!(given(&single, &[], "").is_err());
        assert!(given(&single, &[1], "x").is_err());
        let multi = Question { kind: Kind::MultipleChoice, correct: vec![0, 2], ..single.clone() };
        let both = given(&multi, &[2, 0], "").unwrap();
        assert_eq!(both.stored(), "0,2");
        assert_eq!(is_correct(&multi, &both), Some(true));
        assert_eq!(is_correct(&multi, &Given::Choices(vec![0])), Some(false));
        assert!(given(&multi, &[1, 1], "").is_err());
        let text = q(Kind::ShortText);
        let paris = given(&text, &[], "  paris ").unwrap();
        assert_eq!(is_correct(&text, &paris), Some(true));
        assert!(given(&text, &[0], "").is_err());
        assert!(given(&text, &[], "   ").is_err());
        assert_eq!(is_correct(&q(Kind::Poll), &Given::Choices(vec![2])), None);
        assert_eq!(Given::stored_choices("0,2"), vec![0, 2]);
    }

    #[test]
    fn question_validation_names_every_bad_field() {
        let mut v = Violations::new();
        let input = QuestionInput {
            text: " ".into(),
            kind: Some(Kind::SingleChoice),
            choices: vec!["a".into(), "A".into()],
            correct: vec![0, 5],
            points: Some(-1),
            multiplier: Some(11.0),
            time_limit_secs: 4,
            ..QuestionInput::default()
        };
        assert!(question(&input, "questions[0]", "id".into(), &mut v).is_none());
        let fields: Vec<String> = v.finish().unwrap_err().into_iter().map(|f| f.field).collect();
        for f in [
            "questions[0].text",
            "questions[0].choices[1]",
            "questions[0].correct_choices",
            "questions[0].points",
            "questions[0].multiplier",
            "questions[0].time_limit_secs",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        let mut v = Violations::new();
        let ok = QuestionInput {
            text: "Capital of France?".into(),
            kind: Some(Kind::ShortText),
            accepted: vec!["Paris".into()],
            ..QuestionInput::default()
        };
        let made = question(&ok, "questions[0]", "id".into(), &mut v).unwrap();
        assert_eq!((made.points, made.time_limit_secs, made.multiplier), (1000, 20, 1.0));
        assert!(v.finish().is_ok());
    }

    #[test]
    fn authors_are_admins_and_their_employers_admins() {
        let c = |role, e: Option<&str>| Caller {
            user_id: "u".into(),
            employer_id: e.map(str::to_string),
            role,
        };
        assert!(can_author(&c(Role::Admin, None), None));
        assert!(can_author(&c(Role::EmployerAdmin, Some("acme")), Some("acme")));
        assert!(!can_author(&c(Role::EmployerAdmin, Some("acme")), None));
        assert!(!can_author(&c(Role::EmployerAdmin, Some("acme")), Some("globex")));
        assert!(!can_author(&c(Role::Employee, Some("acme")), Some("acme")));
        assert!(can_play(&c(Role::Employee, Some("acme")), Some("acme")));
        assert!(can_play(&c(Role::Employee, None), None));
        assert!(!can_play(&c(Role::Employee, Some("globex")), Some("acme")));
    }
}
