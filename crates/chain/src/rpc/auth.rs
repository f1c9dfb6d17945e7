//! RPC authentication as Bitcoin Core does it: HTTP Basic with a user and password, either given
//! (`-rpcuser`/`-rpcpassword`) or from a `.cookie` file (`__cookie__:<random hex>`) that the server
//! writes at start, readable by its owner only, and removes when it stops.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bitcoin::secp256k1::rand::{thread_rng, RngCore};

/// The user name of cookie authentication.
pub const COOKIE_USER: &str = "__cookie__";
/// The cookie file's name in the network's data directory.
pub const COOKIE_FILE: &str = ".cookie";

/// A user name and password for HTTP Basic authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Fresh cookie credentials: `__cookie__` and 32 random bytes in hex.
    pub fn random_cookie() -> Self {
        let mut bytes = [0u8; 32];
        thread_rng().fill_bytes(&mut bytes);
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Credentials::new(COOKIE_USER, password)
    }

    /// Read a cookie file (`user:password`, one line).
    pub fn read_cookie(path: &Path) -> Result<Self, AuthError> {
        let text = fs::read_to_string(path).map_err(|e| AuthError::Cookie {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let line = text.lines().next().unwrap_or("").trim();
        let (user, password) = line.split_once(':').ok_or_else(|| AuthError::Cookie {
            path: path.to_path_buf(),
            reason: "not of the form user:password".into(),
        })?;
        Ok(Credentials::new(user, password))
    }

    /// Write these credentials as a cookie file readable by its owner only.
    pub fn write_cookie(&self, path: &Path) -> Result<(), AuthError> {
        let err = |e: std::io::Error| AuthError::Cookie {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // Written beside and renamed, so a reader never sees half a cookie.
        let tmp = path.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(err)?;
        file.write_all(format!("{}:{}", self.user, self.password).as_bytes())
            .map_err(err)?;
        file.sync_all().map_err(err)?;
        fs::rename(&tmp, path).map_err(err)
    }

    /// The value of an `Authorization` header carrying these credentials.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.user, self.password))
        )
    }

    /// Whether an `Authorization` header value carries exactly these credentials (compared in
    /// constant time).
    pub fn check_header(&self, header: &[u8]) -> bool {
        let Some(encoded) = header.strip_prefix(b"Basic ") else {
            return false;
        };
        let Ok(decoded) = BASE64.decode(encoded.trim_ascii()) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        constant_time_eq(&decoded, expected.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a client finds its credentials.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A cookie file written by the server.
    CookieFile(PathBuf),
    /// A fixed user name and password.
    UserPass(Credentials),
}

impl Auth {
    /// The credentials to send now (a cookie file is re-read, since a restarted server writes a
    /// new one).
    pub fn credentials(&self) -> Result<Credentials, AuthError> {
        match self {
            Auth::CookieFile(path) => Credentials::read_cookie(path),
            Auth::UserPass(c) => Ok(c.clone()),
        }
    }
}

/// Credentials that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The cookie file cannot be read or written.
    #[error("cookie file {}: {reason}", path.display())]
    Cookie {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip_and_header_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(COOKIE_FILE);
        let c = Credentials::random_cookie();
        c.write_cookie(&path).unwrap();
        let read = Credentials::read_cookie(&path).unwrap();
        assert_eq!(read, c);
        assert_eq!(read.password.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(c.check_header(c.basic_header().as_bytes()));
        let other = Credentials::new(COOKIE_USER, "00");
        assert!(!c.check_header(other.basic_header().as_bytes()));
        assert!(!c.check_header(b"Basic !!!not-base64"));
        assert!(!c.check_header(b"Bearer abc"));
        assert!(!c.check_header(b""));
    }

    #[test]
    fn bad_cookie_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        assert!(Credentials::read_cookie(&path).is_err());
        fs::write(&path, "no colon").unwrap();
        assert!(Credentials::read_cookie(&path).is_err());
    }
}
