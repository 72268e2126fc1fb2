//! Plain data types of MedPO Arena, shared by `medpo-store` (which fills them from SQL rows),
//! the server and the wasm app (which renders them). No database or tensor code here, so the
//! wasm build stays small.

use serde::{Deserialize, Serialize};

/// A user's role. Admins manage users; clinicians vote; researchers train and export;
/// viewers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Clinician,
    Researcher,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Clinician, Role::Researcher, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Researcher => "researcher",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`; expected one of admin, clinician, researcher, viewer"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub created_at: i64,
}

/// An API key of a user (the secret itself is shown once at creation and never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: i64,
    pub user_id: i64,
    /// The owner's label ("notebook", "eval script").
    pub name: String,
    /// The key's first characters (`mpo_ab12cd34`), to recognise it in lists and logs.
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// An OpenAI-compatible server registered from the Models page; its models join the arena
/// as `<name>/<model>`. The API key itself is never stored, only the name of the server-side
/// environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub id: i64,
    pub name: String,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub models: Vec<String>,
    pub timeout_s: i64,
    pub max_concurrency: i64,
    pub created_at: i64,
}

/// A registered checkpoint: an SFT base or one of its preference-tuned variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub id: i64,
    pub name: String,
    /// The family the checkpoint belongs to, e.g. `llava-med-v1.5-mistral-7b`.
    pub base: String,
    /// `sft` for a base model, otherwise the objective that made it (`dpo`, `mdpo`, ...).
    pub variant: String,
    /// On-disk layout: `llava_mistral`, `llava_qwen2` or `llava_hf`.
    pub layout: String,
    pub parent_id: Option<i64>,
    pub path: String,
    pub files: Vec<String>,
    pub card: String,
    pub params: Option<i64>,
    pub enabled: bool,
    pub created_at: i64,
}

/// A checkpoint folder's `medpo.json`: what the model is and the folder it was trained from.
/// `medpo zoo build` writes it; the server reads it when it registers the folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLineage {
    /// `sft`, `dpo`, `mdpo`, …; none: registered as `sft`.
    #[serde(default)]
    pub variant: Option<String>,
    /// The parent's folder name (it is registered under that name).
    #[serde(default)]
    pub parent: Option<String>,
}

impl ModelLineage {
    /// The file name inside the checkpoint folder.
    pub const FILE: &'static str = "medpo.json";
}

/// What is needed to register a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewModel {
    pub name: String,
    pub base: String,
    pub variant: String,
    pub layout: String,
    pub parent_id: Option<i64>,
    pub path: String,
    pub files: Vec<String>,
    pub card: String,
    pub params: Option<i64>,
}

/// The format an uploaded scan came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Png,
    Jpeg,
    Dicom,
}

impl SourceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Png => "png",
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Dicom => "dicom",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "png" => Some(Self::Png),
            "jpeg" => Some(Self::Jpeg),
            "dicom" => Some(Self::Dicom),
            _ => None,
        }
    }
}

/// `PNG`, `JPEG` or `DICOM`, for messages.
impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceFormat::Png => "PNG",
            SourceFormat::Jpeg => "JPEG",
            SourceFormat::Dicom => "DICOM",
        })
    }
}

/// An uploaded scan, stored content-addressed by the sha256 of its rendered pixels' file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    pub id: i64,
    pub sha256: String,
    pub path: String,
    pub size_bytes: i64,
    pub width: i64,
    pub height: i64,
    pub source_format: SourceFormat,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub view: Option<String>,
    pub uploaded_by: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewScan {
    pub sha256: String,
    pub path: String,
    pub size_bytes: i64,
    pub width: i64,
    pub height: i64,
    pub source_format: SourceFormat,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub view: Option<String>,
    pub uploaded_by: Option<i64>,
}

/// Generation settings recorded with every answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    pub max_new_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self { max_new_tokens: 128, temperature: 0.0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: i64,
    pub comparison_id: i64,
    pub position: i64,
    pub model_id: i64,
    pub text: String,
    pub settings: GenerationSettings,
    pub latency_ms: Option<i64>,
    /// `None` when the model answered; the error message when it failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAnswer {
    pub model_id: i64,
    pub text: String,
    pub settings: GenerationSettings,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub id: i64,
    pub scan_id: i64,
    pub question: String,
    pub blind: bool,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub answers: Vec<Answer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    A,
    B,
    Tie,
    BothBad,
}

impl Winner {
    pub fn as_str(self) -> &'static str {
        match self {
            Winner::A => "a",
            Winner::B => "b",
            Winner::Tie => "tie",
            Winner::BothBad => "both_bad",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "a" => Some(Winner::A),
            "b" => Some(Winner::B),
            "tie" => Some(Winner::Tie),
            "both_bad" => Some(Winner::BothBad),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "minor" => Some(Self::Minor),
            "major" => Some(Self::Major),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// The clinical error taxonomy raters tag answers with.
pub const ERROR_TAGS: [(&str, &str); 7] = [
    ("visual_misinterpretation", "Visual misinterpretation"),
    ("hallucinated_finding", "Hallucinated finding"),
    ("missed_finding", "Missed finding"),
    ("laterality_location", "Laterality or location error"),
    ("wrong_modality_anatomy", "Wrong modality or anatomy"),
    ("knowledge_error", "Knowledge error"),
    ("unsafe_overconfident", "Unsafe or overconfident advice"),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorTag {
    /// Which answer the tag is about, if any.
    pub answer_id: Option<i64>,
    pub tag: String,
    pub severity: Severity,
}

/// A box on the image, in pixel coordinates of the stored scan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewVote {
    pub comparison_id: i64,
    pub rater_id: i64,
    pub answer_a_id: i64,
    pub answer_b_id: i64,
    pub winner: Winner,
    pub rationale: String,
    pub corrected_answer: Option<String>,
    pub region: Option<Region>,
    pub blind: bool,
    pub tags: Vec<ErrorTag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub id: i64,
    pub comparison_id: i64,
    pub rater_id: i64,
    pub answer_a_id: i64,
    pub answer_b_id: i64,
    pub winner: Winner,
    pub rationale: String,
    pub corrected_answer: Option<String>,
    pub region: Option<Region>,
    pub blind: bool,
    pub created_at: i64,
    pub tags: Vec<ErrorTag>,
}

/// One vote with both model names, for ratings and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteOutcome {
    pub vote_id: i64,
    pub comparison_id: i64,
    pub rater_id: i64,
    pub model_a: String,
    pub model_b: String,
    pub winner: Winner,
    pub created_at: i64,
    /// The rater's role (the arena board filters by rater group).
    pub rater_role: String,
    /// The scan's modality, when known.
    pub modality: Option<String>,
    /// The base families of the two models (`models.base`).
    pub base_a: String,
    pub base_b: String,
}

/// One of a rater's own votes, for their history (names shown: they have voted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaterVote {
    pub vote_id: i64,
    pub comparison_id: i64,
    pub question: String,
    pub model_a: String,
    pub model_b: String,
    pub winner: Winner,
    pub blind: bool,
    pub tags: i64,
    pub has_region: bool,
    pub created_at: i64,
}

/// How a blind battle's pair was drawn: weights 1 / (1 + votes the pair already has), so
/// under-voted pairs come up more often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairSample {
    pub model_a_id: i64,
    pub model_b_id: i64,
    pub pair_votes: i64,
    pub candidates: i64,
    pub probability: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub id: i64,
    pub vote_id: Option<i64>,
    pub scan_id: Option<i64>,
    pub question: String,
    pub chosen: String,
    pub rejected: String,
    pub chosen_model_id: Option<i64>,
    pub rejected_model_id: Option<i64>,
    pub region: Option<Region>,
    pub tags: Vec<String>,
    pub source: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub snapshots: Vec<DatasetSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSnapshot {
    pub id: i64,
    pub dataset_id: i64,
    pub version: i64,
    pub pair_count: i64,
    pub sha256: String,
    pub note: String,
    /// `votes` (frozen from the arena's pairs) or `upload` (a preference file's pairs).
    pub origin: String,
    pub created_at: i64,
}

/// A frozen pair with what the snapshot browser filters and counts by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPair {
    pub pair: PreferencePair,
    /// The rater whose vote made the pair (none for uploaded pairs).
    pub rater: Option<String>,
    /// The scan's modality, when known.
    pub modality: Option<String>,
    pub chosen_model: Option<String>,
    pub rejected_model: Option<String>,
    /// The highest severity among the vote's error tags (`minor` < `major` < `critical`).
    pub severity: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingJob {
    pub id: i64,
    pub name: String,
    pub objective: String,
    pub config: serde_json::Value,
    pub base_model_id: i64,
    pub snapshot_id: Option<i64>,
    pub device: String,
    pub status: JobStatus,
    pub step: i64,
    pub total_steps: i64,
    pub result_model_id: Option<i64>,
    pub error: Option<String>,
    /// A cancel was asked for; the worker stops at the next step boundary.
    pub cancel_requested: bool,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTrainingJob {
    pub name: String,
    pub objective: String,
    pub config: serde_json::Value,
    pub base_model_id: i64,
    pub snapshot_id: Option<i64>,
    pub device: String,
    pub total_steps: i64,
    pub created_by: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub step: i64,
    pub metrics: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRun {
    pub id: i64,
    pub model_id: i64,
    pub model_name: String,
    pub benchmark: String,
    pub protocol_version: String,
    pub status: JobStatus,
    pub n_items: i64,
    pub metrics: serde_json::Value,
    pub error: Option<String>,
    /// What the run was asked to do (benchmark files, split, generation settings).
    pub config: serde_json::Value,
    /// Items answered so far and in all (progress of a queued run).
    pub done_items: i64,
    pub total_items: i64,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One recorded action of a researcher or admin (launch, cancel, export, register).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub user_id: Option<i64>,
    pub username: String,
    pub action: String,
    pub target: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    pub item_id: String,
    pub answer_type: String,
    pub category: String,
    pub question: String,
    pub gold: String,
    pub prediction: String,
    pub score: f64,
}

/// A comparison as listed on the Compare page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonSummary {
    pub id: i64,
    pub scan_id: i64,
    pub question: String,
    pub blind: bool,
    pub created_at: i64,
    /// Model names in answer order.
    pub models: Vec<String>,
    pub votes: i64,
}

/// Counts shown on the home page and used for empty states.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub models: i64,
    pub scans: i64,
    pub comparisons: i64,
    pub votes: i64,
    pub pairs: i64,
    pub datasets: i64,
    pub jobs: i64,
    pub eval_runs: i64,
}

/// Formats UTC milliseconds as `YYYY-MM-DD HH:MM` (UTC), without a date library.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, (rem % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_time_known_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        // 2026-11-28 04:39:41 UTC
        assert_eq!(format_time(1_795_840_781_000), "2026-11-28 04:39");
        // Leap day.
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00");
    }

    #[test]
    fn role_round_trip_and_error() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        let e = "doctor".parse::<Role>().unwrap_err();
        assert!(e.contains("doctor") && e.contains("clinician"));
    }
}

/// Generation settings a request may override (absent: the model's released default, or in
/// blind mode one common greedy setting so settings do not give a model away).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SettingsOverride {
    pub max_new_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
}

/// `POST /api/compare`: ask 2–4 models (named) or two drawn at random (blind, no ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRequest {
    pub scan_id: i64,
    pub question: String,
    #[serde(default)]
    pub model_ids: Vec<i64>,
    #[serde(default)]
    pub blind: bool,
    #[serde(default)]
    pub settings: SettingsOverride,
}

/// One column of a streamed comparison. In blind mode `model_id` and `model_name` are absent
/// until the vote reveals them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub label: String,
    pub model_id: Option<i64>,
    pub model_name: Option<String>,
    pub settings: GenerationSettings,
}

/// The events of a streamed comparison, one JSON object per line (`application/x-ndjson`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CompareEvent {
    Start { blind: bool, columns: Vec<ColumnInfo> },
    /// Text completed by one more token of a column.
    Token { column: usize, text: String },
    Done { column: usize, latency_ms: i64, first_token_ms: Option<i64>, tokens: usize },
    /// This column failed; the others go on.
    Error { column: usize, message: String },
    /// Stored: the comparison and its answers' ids, by column.
    Saved { comparison_id: i64, answer_ids: Vec<i64> },
    /// Nothing stored (every model failed, or the database refused).
    Failed { message: String },
}

/// A vote from the page. Positions are columns of the comparison; tags name a side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRequest {
    pub comparison_id: i64,
    pub a_position: i64,
    pub b_position: i64,
    pub winner: Winner,
    #[serde(default)]
    pub tags: Vec<SideTag>,
    #[serde(default)]
    pub rationale: String,
    #[serde(default)]
    pub corrected_answer: Option<String>,
    #[serde(default)]
    pub region: Option<Region>,
}

/// An error tag on answer A (`side = 'a'`) or B (`'b'`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideTag {
    pub side: char,
    pub tag: String,
    pub severity: Severity,
}

/// What the page learns after a vote: its id and, now, which model was which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteReceipt {
    pub vote_id: i64,
    pub model_a: String,
    pub model_b: String,
    pub model_a_id: i64,
    pub model_b_id: i64,
    pub pairs: usize,
}

/// A benchmark the server can evaluate on (`[[benchmark]]` in medpo.toml; VQA-RAD, SLAKE and
/// PathVQA are always listed and need an images folder before they can run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkSpec {
    /// The name runs are stored and shown under.
    pub name: String,
    /// A built-in name (`vqa-rad`, `slake`, `pathvqa`) or a path to a LLaVA-Med-format VQA
    /// JSONL file.
    #[serde(default)]
    pub questions: String,
    /// The folder its image paths are relative to.
    #[serde(default)]
    pub images: Option<std::path::PathBuf>,
    /// Evaluate only the first this many questions (quick boards on a CPU).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl BenchmarkSpec {
    /// Why this benchmark cannot run now, or `None` when it can.
    pub fn unavailable(&self) -> Option<String> {
        match &self.images {
            None => Some(format!(
                "`{}` needs an images folder on the server: add `[[benchmark]] name = \"{}\"` with `images = \"/path/to/images\"` to medpo.toml",
                self.name, self.name
            )),
            Some(dir) if !dir.is_dir() => Some(format!("the images folder `{}` of `{}` does not exist", dir.display(), self.name)),
            Some(_) => None,
        }
    }
}

/// The version of the written rules that turn votes into preference pairs and pairs into
/// training records (docs/datasets.md); shown with every snapshot and written into exports.
pub const PAIR_RULES_VERSION: &str = "medpo-pairs/1";
