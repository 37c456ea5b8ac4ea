//! The hook and admin tokens. A token the configuration leaves unset is generated at first start
//! and kept in a file (mode 0600) so that it survives restarts and the app can be configured
//! with it once; the agent logs where.

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// A token: shown as `***` in logs and `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The tokens of the HTTP listener.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub hook: Secret,
    pub admin: Secret,
}

#[derive(Debug, thiserror::Error)]
#[error("token file {path}: {source}")]
pub struct TokenError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Tokens {
    /// The configured tokens, or those kept in (or now generated into) `dir`.
    pub fn load(
        dir: &Path,
        hook: Option<Secret>,
        admin: Option<Secret>,
    ) -> Result<Tokens, TokenError> {
        Ok(Tokens {
            hook: match hook {
                Some(t) => t,
                None => kept(&dir.join("hook-token"))?,
            },
            admin: match admin {
                Some(t) => t,
                None => kept(&dir.join("admin-token"))?,
            },
        })
    }
}

/// Reads a token file, creating it with a fresh random token if it does not exist.
fn kept(path: &Path) -> Result<Secret, TokenError> {
    let err = |source| TokenError {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim().to_string();
        if token.len() >= 16 {
            return Ok(Secret(token));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let token = random_token().map_err(err)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    writeln!(file, "{token}").map_err(err)?;
    tracing::info!("generated a token in {}", path.display());
    Ok(Secret(token))
}

/// 32 random bytes from the kernel, as hex.
pub fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares a presented token with the expected one in time independent of where they differ.
pub fn matches(presented: &str, expected: &Secret) -> bool {
    let (a, b) = (presented.as_bytes(), expected.0.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_token_is_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = Tokens::load(dir.path(), None, None).unwrap();
        assert_eq!(first.hook.0.len(), 64);
        assert_ne!(first.hook, first.admin);
        let again = Tokens::load(dir.path(), None, None).unwrap();
        assert_eq!(again.hook, first.hook);
        let mode = std::fs::metadata(dir.path().join("hook-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_configured_token_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::load(dir.path(), Some(Secret("x".repeat(20))), None).unwrap();
        assert_eq!(t.hook.0, "x".repeat(20));
        assert!(!dir.path().join("hook-token").exists());
    }

    #[test]
    fn tokens_compare_exactly() {
        let s = Secret("0123456789abcdef".into());
        assert!(matches("0123456789abcdef", &s));
        assert!(!matches("0123456789abcdeF", &s));
        assert!(!matches("0123456789abcde", &s));
    }
}
