//! First start: an empty data directory gets an organization, an owner, a
//! workspace and (with the welcome on) a first tenant-admin key, all in one
//! transaction, so the welcome is printed once and never again.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::domain::keys::KeyHasher;
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
            // Production without a preset password: nothing is created and
            // nothing secret printed; the one-time setup page creates the owner.
            tracing::warn!(setup_url = %format!("{base_url}/setup"), "no organization yet: open the setup page to create it and its owner");
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

fn random_password() -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}
