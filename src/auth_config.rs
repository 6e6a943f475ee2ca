//! The connection-token settings of `wsfleet serve`: flags over environment over config
//! file over defaults, and the key read from its file or environment variable (never a
//! flag value). The key is checked here by building the workers' verifier, so a bad key
//! stops the start (or the reload) with the reason instead of failing every worker.

use std::path::PathBuf;
use std::time::Duration;

use wsfleet_worker::auth::settings::{Algorithm, AuthSettings, KeyBytes};
use wsfleet_worker::auth::source::AuthMode;
use wsfleet_worker::auth::token::{self, SecretSource};

use crate::cli::ServeArgs;
use crate::config::{ConfigError, FileConfig};
use crate::defaults;

/// Resolves the `auth*` options and reads the key.
pub fn resolve(args: &ServeArgs, file: &FileConfig) -> Result<AuthSettings, ConfigError> {
    let invalid = |key: &str, e: String| ConfigError::Invalid(format!("{key} = {e}"));
    let mode = match (args.auth, &file.auth) {
        (Some(mode), _) => mode,
        (None, Some(text)) => text.parse().map_err(|e| invalid("auth", e))?,
        (None, None) => AuthMode::default(),
    };
    let algorithm = match (args.auth_algorithm, &file.auth_algorithm) {
        (Some(alg), _) => alg,
        (None, Some(text)) => text.parse().map_err(|e| invalid("auth_algorithm", e))?,
        (None, None) => Algorithm::default(),
    };
    let secs = |arg: Option<Duration>, file: Option<f64>, key: &str, default: u64| match (arg, file)
    {
        (Some(d), _) => Ok(d.as_secs()),
        (None, Some(s)) if s >= 0.0 && s.is_finite() => Ok(s as u64),
        (None, Some(s)) => Err(invalid(key, format!("{s}: use a number of seconds ≥ 0"))),
        (None, None) => Ok(default),
    };
    let mut settings = AuthSettings {
        mode,
        algorithm,
        key: KeyBytes::default(),
        audience: args
            .auth_audience
            .clone()
            .or_else(|| file.auth_audience.clone())
            .unwrap_or_default(),
        issuer: args
            .auth_issuer
            .clone()
            .or_else(|| file.auth_issuer.clone())
            .unwrap_or_default(),
        leeway_secs: secs(
            args.auth_leeway,
            file.auth_leeway,
            "auth_leeway",
            defaults::AUTH_LEEWAY_SECS,
        )?,
        grace_secs: secs(
            args.auth_refresh_grace,
            file.auth_refresh_grace,
            "auth_refresh_grace",
            defaults::AUTH_REFRESH_GRACE_SECS,
        )?,
    };
    if mode == AuthMode::Off {
        return Ok(settings);
    }
    let key_file: Option<PathBuf> = args.auth_key_file.clone().or(file.auth_key_file.clone());
    let secret_env = args
        .auth_secret_env
        .clone()
        .or(file.auth_secret_env.clone());
    let key = match (algorithm, key_file, secret_env) {
        (_, Some(_), Some(_)) => {
            return Err(ConfigError::Invalid(
                "auth_key_file and auth_secret_env are both set: give the key one way".into(),
            ));
        }
        (Algorithm::Hs256, Some(path), None) => token::load_secret(&SecretSource::File(path)),
        (Algorithm::Hs256, None, Some(var)) => token::load_secret(&SecretSource::Env(var)),
        (_, Some(path), None) => token::read_file(&path),
        (Algorithm::Hs256, None, None) => {
            return Err(ConfigError::Invalid(format!(
                "auth = {} needs the HS256 secret: set auth_key_file (a file) or \
                 auth_secret_env (the name of an environment variable holding it)",
                mode.name()
            )));
        }
        (alg, None, _) => {
            return Err(ConfigError::Invalid(format!(
                "auth_algorithm = {} needs auth_key_file: the public key PEM file",
                alg.name()
            )));
        }
    };
    settings.key = KeyBytes(key.map_err(|e| ConfigError::Invalid(e.to_string()))?);
    settings
        .build()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn off_by_default_and_needs_no_key() {
        let s = resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.mode, AuthMode::Off);
        assert_eq!(s.grace_secs, defaults::AUTH_REFRESH_GRACE_SECS);
    }

    #[test]
    fn the_key_comes_from_a_file_and_is_checked() {
        let dir = std::env::temp_dir().join(format!("wsfleet-authcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let text = format!(
            "auth = \"required\"\nauth_key_file = {:?}\nauth_audience = [\"app\"]\nauth_refresh_grace = 5\n",
            path.display().to_string()
        );
        let s = resolve(&ServeArgs::default(), &file(&text)).unwrap();
        assert_eq!(s.mode, AuthMode::Required);
        assert_eq!(s.key.0.len(), 32, "the trailing newline is trimmed");
        assert_eq!(
            (s.audience.as_slice(), s.grace_secs),
            (&["app".to_owned()][..], 5)
        );

        std::fs::write(&path, "short").unwrap();
        let err = resolve(&ServeArgs::default(), &file(&text))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 32"), "{err}");
        let es = format!("{text}auth_algorithm = \"es256\"\n");
        let err = resolve(&ServeArgs::default(), &file(&es))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ES256"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_doubled_key_source_is_refused_with_what_to_set() {
        let err = resolve(&ServeArgs::default(), &file("auth = \"optional\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth_secret_env"), "{err}");
        let err = resolve(
            &ServeArgs::default(),
            &file("auth = \"optional\"\nauth_algorithm = \"rs256\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("public key PEM"), "{err}");
        let both = "auth = \"optional\"\nauth_key_file = \"/x\"\nauth_secret_env = \"X\"\n";
        let err = resolve(&ServeArgs::default(), &file(both))
            .unwrap_err()
            .to_string();
        assert!(err.contains("one way"), "{err}");
        let err = resolve(&ServeArgs::default(), &file("auth = \"on\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("off, optional, required"), "{err}");
        let unset = "auth = \"required\"\nauth_secret_env = \"WSFLEET_TEST_UNSET_SECRET_VAR\"\n";
        let err = resolve(&ServeArgs::default(), &file(unset))
            .unwrap_err()
            .to_string();
        assert!(err.contains("WSFLEET_TEST_UNSET_SECRET_VAR"), "{err}");
    }
}
