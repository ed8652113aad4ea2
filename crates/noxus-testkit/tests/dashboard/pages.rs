//! What a person does in the dashboard, as helpers over a WebDriver session:
//! find and click by the page contract's stable ids, wait for the next page,
//! log in, walk Settings → Organization → Workspaces → a workspace.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fantoccini::elements::Element;
use fantoccini::{Client, Locator};
use serde_json::json;

/// How long to wait for an element or a page.
const WAIT: Duration = Duration::from_secs(20);

/// A browser session against one platform.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    base_url: String,
}

impl Browser {
    pub fn new(client: Client, base_url: &str) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Opens `path` as if typed into the address bar.
    pub async fn goto(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .goto(&self.url(path))
            .await
            .with_context(|| format!("opening {path}"))
    }

    /// The current URL's path (with the query, if any).
    pub async fn path(&self) -> anyhow::Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// Waits until the current path is `path` (after a click, a redirect).
    pub async fn wait_for_path(&self, path: &str) -> anyhow::Result<()> {
        if let Err(seen) = until_reads(|| self.path(), path).await? {
            bail!("expected to arrive at {path}, but the browser stays at {seen}");
        }
        Ok(())
    }

    /// Waits for the element matching `css` and returns it.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no `{css}` on the page"))
    }

    /// Every element matching `css` now (no waiting): for "is not shown".
    pub async fn find_all_now(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        Ok(self.client.find_all(Locator::Css(css)).await?)
    }

    /// Waits for `css`, then clicks it.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking `{css}`"))
    }

    /// Waits for `css`, then types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.find(css).await?;
        field.clear().await?;
        field
            .send_keys(text)
            .await
            .with_context(|| format!("typing into `{css}`"))
    }

    /// The visible text of `css`. When a page loading after a click
    /// replaces the element between finding and reading it (a stale
    /// element), it is found again.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.find(css).await?.text().await {
                Ok(text) => return Ok(text),
                Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("reading `{css}`")),
            }
        }
    }

    /// Waits until the text of `css` is `expected`: after a click that
    /// submits a form, the old page's element can still be there for a
    /// moment. Fails with the last text seen.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> anyhow::Result<()> {
        if let Err(seen) = until_reads(|| self.text(css), expected).await? {
            bail!("expected `{css}` to read {expected:?}, but it reads {seen:?}");
        }
        Ok(())
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> anyhow::Result<String> {
        Ok(self.client.source().await?)
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.client.screenshot().await?)
    }

    /// Logs in through the login form and waits for the workspaces list.
    pub async fn log_in(&self, email: &str, password: &str) -> anyhow::Result<()> {
        self.goto("/login").await?;
        self.type_into("#login-form #email", email).await?;
        self.type_into("#login-form #password", password).await?;
        self.click("#login-submit").await?;
        if let Ok(error) = self.client.find(Locator::Css("#login-error")).await {
            bail!("login as {email} refused: {}", error.text().await?);
        }
        self.wait_for_path("/settings/organization/workspaces")
            .await
            .with_context(|| format!("after logging in as {email}"))
    }

    /// Logs in with a password someone else chose: the dashboard asks for
    /// one of one's own first, then goes on to the workspaces.
    pub async fn log_in_choosing_password(
        &self,
        email: &str,
        initial: &str,
        chosen: &str,
    ) -> anyhow::Result<()> {
        self.log_in_to_choose_password(email, initial).await?;
        self.choose_password(email, initial, chosen).await
    }

    /// Logs in with a password someone else chose and waits for the page
    /// that asks for one of one's own.
    pub async fn log_in_to_choose_password(
        &self,
        email: &str,
        initial: &str,
    ) -> anyhow::Result<()> {
        self.goto("/login").await?;
        self.type_into("#login-form #email", email).await?;
        self.type_into("#login-form #password", initial).await?;
        self.click("#login-submit").await?;
        self.wait_for_path("/settings/account/password")
            .await
            .with_context(|| format!("after logging in as {email} with an initial password"))?;
        self.find("#password-forced").await?;
        Ok(())
    }

    /// On the page that asks for one's own password: chooses `chosen` and
    /// waits for the workspaces.
    pub async fn choose_password(
        &self,
        email: &str,
        initial: &str,
        chosen: &str,
    ) -> anyhow::Result<()> {
        self.type_into("#current-password", initial).await?;
        self.type_into("#new-password", chosen).await?;
        self.type_into("#new-password-confirm", chosen).await?;
        self.click("#password-submit").await?;
        self.wait_for_path("/settings/organization/workspaces")
            .await
            .with_context(|| format!("after {email} chose a password"))
    }

    /// Logs out with the header's button and waits for the login page.
    pub async fn log_out(&self) -> anyhow::Result<()> {
        self.click("#logout").await?;
        self.wait_for_path("/login").await
    }

    /// From any logged-in page, clicks Settings → Workspaces (through the
    /// organization page, as a person would).
    pub async fn open_workspaces(&self) -> anyhow::Result<()> {
        self.click("#nav-settings").await?;
        // /settings redirects to the organization page.
        self.wait_for_path("/settings/organization").await?;
        self.click("#nav-workspaces").await?;
        self.wait_for_path("/settings/organization/workspaces")
            .await?;
        self.find("table#workspaces").await?;
        Ok(())
    }

    /// From any logged-in page: Settings → Organization → Workspaces →
    /// the workspace named `name` → its API Keys tab. Returns the
    /// workspace's id.
    pub async fn open_workspace(&self, name: &str) -> anyhow::Result<String> {
        self.open_workspaces().await?;
        let mut names = Vec::new();
        let mut target = None;
        for link in self
            .client
            .find_all(Locator::Css("table#workspaces a.workspace-link"))
            .await?
        {
            let text = link.text().await?;
            if text.trim() == name {
                target = Some(link);
                break;
            }
            names.push(text);
        }
        let link = target
            .with_context(|| format!("no workspace link named {name:?} (links: {names:?})"))?;
        let id = link
            .attr("data-workspace-id")
            .await?
            .context("a.workspace-link without data-workspace-id")?;
        link.click().await?;
        self.click("#tab-api-keys").await?;
        self.wait_for_path(&keys_path(&id)).await?;
        Ok(id)
    }

    /// The CSRF token of this session, from the header's logout form.
    pub async fn csrf(&self) -> anyhow::Result<String> {
        self.find("#logout-form input[name=csrf]")
            .await?
            .attr("value")
            .await?
            .context("the logout form's csrf input has no value")
    }

    /// The session cookie (HttpOnly: read through WebDriver, not the page).
    pub async fn session_cookie(&self) -> anyhow::Result<String> {
        let cookie = self
            .client
            .get_named_cookie("noxus_session")
            .await
            .context("no noxus_session cookie in the browser")?;
        Ok(cookie.value().to_owned())
    }

    /// POSTs a form from the page's own JavaScript (same origin, with the
    /// browser's cookies, as a forged or tampered form would) and returns the
    /// response's status.
    pub async fn post_from_page(&self, path: &str, fields: &[(&str, &str)]) -> anyhow::Result<u16> {
        let fields: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let status = self
            .client
            .execute(
                "return fetch(arguments[0], { method: 'POST', body: new URLSearchParams(arguments[1]), redirect: 'manual' })
                   .then(function (r) { return r.status; });",
                vec![json!(path), json!(fields)],
            )
            .await
            .with_context(|| format!("fetch POST {path} from the page"))?;
        status
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .with_context(|| format!("fetch returned {status}, not a status"))
    }
}

/// The API Keys tab of a workspace.
pub fn keys_path(workspace_id: &str) -> String {
    format!("/settings/organization/workspaces/{workspace_id}/api-keys")
}

/// The Members tab of a workspace.
pub fn members_path(workspace_id: &str) -> String {
    format!("/settings/organization/workspaces/{workspace_id}/members")
}

/// Calls `read` every 50 ms until it returns `expected` (`Ok(Ok(()))`) or
/// [`WAIT`] passes (`Ok(Err(last value read))`); errors end the wait.
async fn until_reads<F, Fut>(mut read: F, expected: &str) -> anyhow::Result<Result<(), String>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = read().await?;
        if seen == expected {
            return Ok(Ok(()));
        }
        if Instant::now() >= deadline {
            return Ok(Err(seen));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it says yes (`Ok(true)`) or [`WAIT`]
/// passes (`Ok(false)`); errors end the wait.
pub async fn eventually<F, Fut>(mut check: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
