//! First start: an empty data directory gets an organization, an owner, a
//! workspace and (with the welcome on) a first tenant-admin key, all in one
//! transaction, so the welcome is printed once and never again.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::domain::keys::{KeyHasher, PreviousPepper, MIN_PEPPER_BYTES};
use crate::domain::passwords::hash_password;
use crate::store::{BootstrapOutcome, BootstrapRequest, Store};

/// What a newcomer needs after the first start. `Display` renders the text
/// to print (it contains secrets); `Debug` does not show them.
pub struct Welcome {
    /// The outcome (ids, names).
    pub outcome: BootstrapOutcome,
    /// The owner's password, when it was generated (not given by the operator).
    pub generated_password: Option<SecretString>,
    /// The first key.
    pub api_key: Option<SecretString>,
    /// Base URL of this server.
    pub base_url: String,
}

impl fmt::Debug for Welcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Welcome")
            .field("organization", &self.outcome.organization.name)
            .field("admin_email", &self.outcome.user.email)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Welcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.outcome;
        writeln!(f)?;
        writeln!(
            f,
            "Noxus is set up (first start): organization \"{}\", workspace \"{}\".",
            o.organization.name, o.workspace.name
        )?;
        writeln!(f)?;
        writeln!(f, "Log in to the dashboard at {}/login", self.base_url)?;
        writeln!(f, "  email:    {}", o.user.email)?;
        match &self.generated_password {
            Some(p) => writeln!(f, "  password: {}", p.expose_secret())?,
            None => writeln!(f, "  password: the one you set in NOXUS_ADMIN_PASSWORD")?,
        }
        if let Some(key) = &self.api_key {
            writeln!(f)?;
            writeln!(
                f,
                "Your first API key (tenant admin, workspace \"{}\"). It is shown only this once:",
                o.workspace.name
            )?;
            writeln!(f)?;
            writeln!(f, "  export NOXUS_API_KEY={}", key.expose_secret())?;
            writeln!(f, "  export NOXUS_BACKEND_URL={}", self.base_url)?;
            writeln!(f)?;
            writeln!(f, "Check it:")?;
            writeln!(f)?;
            writeln!(
                f,
                "  curl -s -H \"X-API-Key: $NOXUS_API_KEY\" \"$NOXUS_BACKEND_URL/v1/admin/me\""
            )?;
        }
        writeln!(f)?;
        write!(
            f,
            "This is printed on the first start only; store the key and password now."
        )
    }
}

/// The setting that holds the pepper's fingerprint.
const PEPPER_SETTING: &str = "key_pepper_fingerprint";

/// Refuses to start with a pepper other than the one the database's keys
/// were digested with (which would silently make every key 401), and with a
/// pepper shorter than 32 bytes. During a rotation the stored fingerprint
/// may be the previous pepper's. Records the current one.
pub async fn check_pepper(
    store: &dyn Store,
    hasher: &KeyHasher,
    config: &Config,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    if let Some(pepper) = &config.pepper {
        if pepper.expose_secret().len() < MIN_PEPPER_BYTES {
            anyhow::bail!(
                "NOXUS_KEY_PEPPER must be at least {MIN_PEPPER_BYTES} bytes of random text (for example `openssl rand -base64 48`)"
            );
        }
    }
    if let Some(PreviousPepper::Pepper(previous)) = &config.previous_pepper {
        if previous.expose_secret().len() < MIN_PEPPER_BYTES {
            anyhow::bail!("NOXUS_KEY_PEPPER_PREVIOUS must be the previous pepper (at least {MIN_PEPPER_BYTES} bytes), or `none` if keys were made without one");
        }
    }
    let current = hasher.fingerprint();
    // The first process to record its fingerprint sets it for all: of two
    // replicas with different peppers starting at once on an empty
    // database, the second is refused below.
    let stored = match store.setting(PEPPER_SETTING).await? {
        Some(stored) => stored,
        None => store.setting_or_insert(PEPPER_SETTING, &current).await?,
    };
    if stored == current {
        return Ok(());
    }
    if hasher.previous_fingerprint().as_deref() == Some(stored.as_str()) {
        tracing::warn!("key pepper rotation: keys made under the previous pepper keep working and are re-digested when next used; keep NOXUS_KEY_PEPPER_PREVIOUS until they were all used");
    } else if stored == "none" {
        anyhow::bail!(
            "this database's keys were made without a pepper, and NOXUS_KEY_PEPPER is set: every existing key would be refused. To add a pepper, also set NOXUS_KEY_PEPPER_PREVIOUS=none during a rotation window (see docs/configuration.md)"
        );
    } else if current == "none" {
        anyhow::bail!(
            "this database's keys were made under a pepper ({stored}) and NOXUS_KEY_PEPPER is not set: every key would be refused. Set NOXUS_KEY_PEPPER to that pepper"
        );
    } else {
        anyhow::bail!(
            "NOXUS_KEY_PEPPER does not match the pepper this database's keys were made under ({stored}, yours is {current}): every key would be refused. Set the right pepper, or rotate with NOXUS_KEY_PEPPER_PREVIOUS set to the old one (see docs/configuration.md)"
        );
    }
    // A rotation: the current pepper is the one from now on.
    store.set_setting(PEPPER_SETTING, &current).await?;
    Ok(())
}

/// Sets the platform up if the store is empty (with the welcome off and no
/// `NOXUS_ADMIN_PASSWORD`, leaves it empty for the setup page). Returns what to tell the
/// operator, or `None` on later starts.
pub async fn first_start(
    store: &dyn Store,
    hasher: &KeyHasher,
    config: &Config,
    base_url: &str,
) -> anyhow::Result<Option<Welcome>> {
    if store.organization().await?.is_some() {
        return Ok(None);
    }
    let generated_password = match &config.admin_password {
        Some(_) => None,
        None if config.welcome => Some(SecretString::from(random_password())),
        None => {
            // Production without a preset password: nothing is created; the
            // one-time setup page creates the owner, with the setup token
            // that `prepare_setup` prints.
            tracing::warn!(setup_url = %format!("{base_url}/setup"), "no organization yet: open the setup page (with the setup token printed on stdout) to create it and its owner");
            return Ok(None);
        }
    };
    let password = config
        .admin_password
        .as_ref()
        .or(generated_password.as_ref())
        .map(|p| p.expose_secret().to_owned())
        .unwrap_or_default();
    let issued = config.welcome.then(|| hasher.issue());
    let request = BootstrapRequest {
        organization_name: "Noxus".to_owned(),
        admin_email: config.admin_email.clone(),
        admin_name: "Owner".to_owned(),
        password_hash: hash_password(&password)?,
        workspace_name: "Default".to_owned(),
        first_key: issued.as_ref().map(|k| {
            (
                "first key".to_owned(),
                k.digest,
                k.prefix.clone(),
                k.suffix.clone(),
            )
        }),
    };
    let Some(outcome) = store.bootstrap(request).await? else {
        // Another process set it up between our check and our transaction.
        return Ok(None);
    };
    tracing::info!(organization_id = %outcome.organization.id, workspace_id = %outcome.workspace.id, "first start: platform set up");
    Ok(Some(Welcome {
        outcome,
        generated_password,
        api_key: issued.map(|k| k.secret),
        base_url: base_url.to_owned(),
    }))
}

/// The setting that holds the one-time setup token's digest.
pub const SETUP_TOKEN_SETTING: &str = "setup_token_digest";

/// The setup page's address with its one-time token, printed (on stdout,
/// never in the log) when the platform starts without an organization and
/// without the welcome: as Jenkins and GitLab do, only whoever can read the
/// server's output may create the first owner. A new token is made at every
/// such start; only its digest is stored.
pub struct SetupLink(pub SecretString);

impl fmt::Debug for SetupLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SetupLink(…)")
    }
}

/// Makes the one-time setup token if the platform is not set up yet.
pub async fn prepare_setup(store: &dyn Store, base_url: &str) -> anyhow::Result<Option<SetupLink>> {
    if store.organization().await?.is_some() {
        return Ok(None);
    }
    let token = random_password();
    store
        .set_setting(SETUP_TOKEN_SETTING, &setup_token_digest(&token))
        .await?;
    Ok(Some(SetupLink(SecretString::from(format!(
        "{base_url}/setup?token={token}"
    )))))
}

/// The stored form of a setup token.
pub fn setup_token_digest(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn random_password() -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}
