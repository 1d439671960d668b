use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The emotion vocabulary the product reports, named as the original service named them.
///
/// `Contempt` is only reported by models that have the class (e.g. FER+); the seven others are
/// always present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EmotionLabel {
    Angry,
    Disgust,
    Fear,
    Happy,
    Neutral,
    Sad,
    Surprised,
    Contempt,
}

impl EmotionLabel {
    /// Canonical order: the seven basic labels alphabetically, then contempt.
    pub const ALL: [EmotionLabel; 8] = [
        EmotionLabel::Angry,
        EmotionLabel::Disgust,
        EmotionLabel::Fear,
        EmotionLabel::Happy,
        EmotionLabel::Neutral,
        EmotionLabel::Sad,
        EmotionLabel::Surprised,
        EmotionLabel::Contempt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EmotionLabel::Angry => "angry",
            EmotionLabel::Disgust => "disgust",
            EmotionLabel::Fear => "fear",
            EmotionLabel::Happy => "happy",
            EmotionLabel::Neutral => "neutral",
            EmotionLabel::Sad => "sad",
            EmotionLabel::Surprised => "surprised",
            EmotionLabel::Contempt => "contempt",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EmotionLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown emotion label {0:?}")]
pub struct UnknownLabel(pub String);

impl FromStr for EmotionLabel {
    type Err = UnknownLabel;

    /// Accepts the product's names and the names the model zoos use (FER2013, FER+, face-api).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "angry" | "anger" => EmotionLabel::Angry,
            "disgust" | "disgusted" => EmotionLabel::Disgust,
            "fear" | "fearful" | "scared" => EmotionLabel::Fear,
            "happy" | "happiness" => EmotionLabel::Happy,
            "neutral" => EmotionLabel::Neutral,
            "sad" | "sadness" => EmotionLabel::Sad,
            "surprised" | "surprise" => EmotionLabel::Surprised,
            "contempt" => EmotionLabel::Contempt,
            _ => return Err(UnknownLabel(s.to_string())),
        })
    }
}

impl Serialize for EmotionLabel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EmotionLabel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One probability per label. Serialises as a JSON object in canonical label order, with
/// `contempt` only when the producing model has that class.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EmotionScores {
    values: [f32; 8],
    has_contempt: bool,
}

impl EmotionScores {
    pub fn new(has_contempt: bool) -> Self {
        Self {
            values: [0.0; 8],
            has_contempt,
        }
    }

    pub fn has_contempt(&self) -> bool {
        self.has_contempt
    }

    pub fn get(&self, label: EmotionLabel) -> f32 {
        self.values[label.index()]
    }

    pub fn set(&mut self, label: EmotionLabel, p: f32) {
        self.values[label.index()] = p;
        if label == EmotionLabel::Contempt {
            self.has_contempt = true;
        }
    }

    /// The labels this score set reports, in canonical order.
    pub fn labels(&self) -> impl Iterator<Item = EmotionLabel> + '_ {
        EmotionLabel::ALL
            .into_iter()
            .filter(|l| *l != EmotionLabel::Contempt || self.has_contempt)
    }

    pub fn iter(&self) -> impl Iterator<Item = (EmotionLabel, f32)> + '_ {
        self.labels().map(|l| (l, self.get(l)))
    }

    /// The most probable label; ties go to the earlier label in canonical order.
    pub fn dominant(&self) -> EmotionLabel {
        let mut best = EmotionLabel::Angry;
        for (label, p) in self.iter() {
            if p > self.get(best) {
                best = label;
            }
        }
        best
    }

    pub(crate) fn values(&self) -> &[f32; 8] {
        &self.values
    }

    pub(crate) fn from_values(values: [f32; 8], has_contempt: bool) -> Self {
        Self {
            values,
            has_contempt,
        }
    }
}

impl Serialize for EmotionScores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (label, p) in self.iter() {
            map.serialize_entry(label.as_str(), &round6(p))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for EmotionScores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = std::collections::BTreeMap::<String, f32>::deserialize(d)?;
        let mut scores = EmotionScores::new(false);
        for (k, v) in raw {
            let label: EmotionLabel = k.parse().map_err(serde::de::Error::custom)?;
            scores.set(label, v);
        }
        Ok(scores)
    }
}

/// Probabilities are reported with 6 decimals: more is noise, and it keeps JSON and CSV compact.
pub(crate) fn round6(p: f32) -> f64 {
    (p as f64 * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_zoo_names_map_to_product_labels() {
        for (name, label) in [
            ("anger", EmotionLabel::Angry),
            ("happiness", EmotionLabel::Happy),
            ("sadness", EmotionLabel::Sad),
            ("surprise", EmotionLabel::Surprised),
            ("Neutral", EmotionLabel::Neutral),
            ("contempt", EmotionLabel::Contempt),
        ] {
            assert_eq!(name.parse::<EmotionLabel>().unwrap(), label);
        }
        assert!("joy".parse::<EmotionLabel>().is_err());
    }

    #[test]
    fn scores_serialise_in_canonical_order_and_hide_contempt_unless_present() {
        let mut s = EmotionScores::new(false);
        s.set(EmotionLabel::Sad, 0.75);
        s.set(EmotionLabel::Angry, 0.25);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"angry":0.25,"disgust":0.0,"fear":0.0,"happy":0.0,"neutral":0.0,"sad":0.75,"surprised":0.0}"#
        );
        assert_eq!(s.dominant(), EmotionLabel::Sad);
        s.set(EmotionLabel::Contempt, 0.9);
        assert!(
            serde_json::to_string(&s)
                .unwrap()
                .ends_with(r#""contempt":0.9}"#)
        );
        assert_eq!(s.dominant(), EmotionLabel::Contempt);
        let back: EmotionScores =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
