//! The API's settings from the environment: one set of names on both backends, the first
//! template's names still read, and a clear error for a bad value.

use std::collections::HashMap;

use crate::ApiConfig;

fn config(vars: &[(&str, &str)]) -> Result<ApiConfig, String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ApiConfig::from_vars(|name| vars.get(name).cloned())
}

#[test]
fn the_deepemotion_names_set_the_api() {
    let c = config(&[
        ("DEEPEMOTION_MAX_UPLOAD_BYTES", "1000"),
        ("DEEPEMOTION_DEFAULT_SAMPLE_FPS", "2"),
        ("DEEPEMOTION_CORS_ORIGINS", "https://app.example.com/"),
        ("DEEPEMOTION_LOGINS_PER_ADDRESS", "5/60"),
    ])
    .unwrap();
    assert_eq!(c.max_upload_bytes, 1000);
    assert_eq!(c.default_sample_fps, 2.0);
    assert_eq!(c.cors_origins, vec!["https://app.example.com"]);
    assert_eq!(
        c.rate_limits.logins_per_address,
        crate::RateLimit::new(5, 60)
    );
}

#[test]
fn the_first_templates_names_still_work_and_the_new_ones_win() {
    let legacy = config(&[
        ("MAX_UPLOAD_BYTES", "2000"),
        ("DEFAULT_SAMPLE_FPS", "0"),
        ("CORS_ORIGINS", "https://old.example.com"),
    ])
    .unwrap();
    assert_eq!(legacy.max_upload_bytes, 2000);
    assert_eq!(legacy.default_sample_fps, 0.0);
    assert_eq!(legacy.cors_origins, vec!["https://old.example.com"]);
    let both = config(&[
        ("MAX_UPLOAD_BYTES", "2000"),
        ("DEEPEMOTION_MAX_UPLOAD_BYTES", "3000"),
    ])
    .unwrap();
    assert_eq!(both.max_upload_bytes, 3000);
    assert_eq!(config(&[]).unwrap().max_upload_bytes, 2 << 30);
}

#[test]
fn a_bad_value_is_refused_by_name() {
    let err = config(&[("MAX_UPLOAD_BYTES", "lots")]).unwrap_err();
    assert!(err.contains("MAX_UPLOAD_BYTES"), "{err}");
    let err = config(&[("DEEPEMOTION_DEFAULT_SAMPLE_FPS", "31")]).unwrap_err();
    assert!(err.contains("DEEPEMOTION_DEFAULT_SAMPLE_FPS"), "{err}");
    let err = config(&[("DEEPEMOTION_CORS_ORIGINS", "app.example.com")]).unwrap_err();
    assert!(err.contains("app.example.com"), "{err}");
}
