//! The two scoring protocols a run is reported under, side by side.
//!
//! - [`Protocol::Medpo`] ([`PROTOCOL_VERSION`]): ours, strict (first yes/no token for yes/no
//!   golds, clipped token recall). Metric keys as in [`crate::score`].
//! - [`Protocol::LlavaMed`] ([`LLAVA_MED_PROTOCOL`]): LLaVA-Med's `run_eval_batch.py` rules
//!   ([`crate::llava_med`]), for comparison with published numbers. Its metrics carry the
//!   prefix `llava-med/`: `llava-med/closed/accuracy`, `llava-med/open/recall`,
//!   `llava-med/overall/score`, `llava-med/category/<c>/score`.
//!
//! Every run is scored under both; a protocol choice (`--protocol` on the command line) picks
//! which one leads the tables and which one leaderboards rank and test by.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::llava_med::LLAVA_MED_PROTOCOL;
use crate::summary::ItemResult;
use crate::PROTOCOL_VERSION;

/// A scoring protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Ours: `medpo-eval/1`.
    #[default]
    Medpo,
    /// LLaVA-Med's lenient rules (the seed's numbers).
    LlavaMed,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Medpo, Protocol::LlavaMed];

    /// The name used on the command line: `medpo` or `llava-med`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Medpo => "medpo",
            Protocol::LlavaMed => "llava-med",
        }
    }

    /// The versioned name stored with results.
    pub fn version(self) -> &'static str {
        match self {
            Protocol::Medpo => PROTOCOL_VERSION,
            Protocol::LlavaMed => LLAVA_MED_PROTOCOL,
        }
    }

    /// Parses `medpo` or `llava-med` (the stored version names are accepted too).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "medpo" | PROTOCOL_VERSION => Ok(Protocol::Medpo),
            "llava-med" | LLAVA_MED_PROTOCOL => Ok(Protocol::LlavaMed),
            _ => Err(Error::Invalid(format!("unknown protocol `{s}`: use `medpo` or `llava-med`"))),
        }
    }

    /// The key of `metric` (`closed/accuracy`, `overall/score`, …) under this protocol.
    pub fn key(self, metric: &str) -> String {
        match self {
            Protocol::Medpo => metric.to_string(),
            Protocol::LlavaMed => format!("llava-med/{metric}"),
        }
    }

    /// An item's score under this protocol (`None`: a summary written before the LLaVA-Med
    /// variant existed).
    pub fn item_score(self, item: &ItemResult) -> Option<f64> {
        match self {
            Protocol::Medpo => Some(item.score),
            Protocol::LlavaMed => item.llava_med_score,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Protocol::parse(s)
    }
}
