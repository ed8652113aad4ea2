//! The accessibility check of a page: axe-core (pinned in
//! `tests/dashboard-a11y/package.json`, installed by `.ci/run`) run in the
//! page at desktop (1280×900) and phone (390×844) width, the page's width at
//! phone size, and a screenshot of each width for reviewers.
//!
//! axe is injected through WebDriver's Execute Script, which Chromium runs
//! outside the page's Content-Security-Policy (`script-src 'self'` would
//! refuse an injected `<script>`), so the page is checked as served.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::harness;
use crate::pages::Browser;

/// The widths every page is checked at: (name, width, height) in CSS pixels.
pub const WIDTHS: [(&str, u32, u32); 2] = [("desktop", 1280, 900), ("phone", 390, 844)];

/// The window size the harness starts Chromium with, restored after a check.
const START_SIZE: (u32, u32) = (1280, 1000);

/// axe's impacts that fail a page ("minor" ones are only printed).
const FAILING_IMPACTS: [&str; 3] = ["critical", "serious", "moderate"];

/// Where axe-core's browser bundle is: `NOXUS_AXE_JS`, or the
/// `node_modules` that `npm ci` in `tests/dashboard-a11y` makes.
pub fn axe_path() -> PathBuf {
    match std::env::var_os("NOXUS_AXE_JS") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/dashboard-a11y/node_modules/axe-core/axe.min.js"),
    }
}

/// axe-core's source, read once; `None` when it is not installed (outside
/// CI: the accessibility checks then say SKIPPED; under `CI`: a failure).
fn axe_source() -> Option<&'static str> {
    static SOURCE: OnceLock<Option<String>> = OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let path = axe_path();
            match std::fs::read_to_string(&path) {
                Ok(source) => Some(source),
                Err(e) => {
                    if std::env::var_os("CI").is_some() {
                        panic!(
                            "axe-core not readable at {} ({e}): .ci/run installs it with \
                             `npm ci --prefix tests/dashboard-a11y` (or set NOXUS_AXE_JS)",
                            path.display()
                        );
                    }
                    None
                }
            }
        })
        .as_deref()
}

/// A JSON string field, or "".
fn text_of<'a>(value: &'a serde_json::Value, field: &str) -> &'a str {
    value.get(field).and_then(|v| v.as_str()).unwrap_or("")
}

/// In-page: the document's width against the viewport's, and every visible
/// control (link, button, field) or element sticking out of the viewport.
const WIDTH_SCRIPT: &str = r#"
var vw = window.innerWidth;
var outside = [];
var describe = function (el) {
  var text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().replace(/\s+/g, ' ').slice(0, 40);
  var id = el.id ? '#' + el.id : '';
  var cls = (typeof el.className === 'string' && el.className) ? '.' + el.className.trim().split(/\s+/).join('.') : '';
  var r = el.getBoundingClientRect();
  return el.tagName.toLowerCase() + id + cls + ' "' + text + '" spans x ' + Math.round(r.left) + '..' + Math.round(r.right);
};
document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary').forEach(function (el) {
  var r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) { return; }
  if (el.closest('.sr, .skip')) { return; }
  if (r.right > vw + 1 || r.left < -1) { outside.push(describe(el)); }
});
return { scrollWidth: document.documentElement.scrollWidth, innerWidth: vw, outside: outside };
"#;

impl Browser {
    /// Checks the current page at desktop and phone width: no axe
    /// violation of impact critical, serious or moderate, and at phone
    /// width no sideways scrolling of the page and every control within the
    /// screen. Saves `target/dashboard-screens/<label>-desktop.png` and
    /// `<label>-phone.png` (the whole page's height). Fails with every
    /// problem found at both widths; restores the window size either way.
    pub async fn check_a11y(&self, label: &str) -> anyhow::Result<()> {
        let problems = self.a11y_problems(label).await;
        let restored = self.resize(START_SIZE.0, START_SIZE.1).await;
        let problems = problems?;
        restored?;
        if !problems.is_empty() {
            bail!(
                "accessibility of the {label} page ({}):\n{}",
                self.path().await.unwrap_or_default(),
                problems.join("\n")
            );
        }
        Ok(())
    }

    async fn a11y_problems(&self, label: &str) -> anyhow::Result<Vec<String>> {
        let axe = axe_source();
        if axe.is_none() {
            noxus_testkit::report_skip(
                &format!("accessibility check of the {label} page"),
                &format!(
                    "axe-core is not installed at {} (run `npm ci --prefix tests/dashboard-a11y`, \
                     or set NOXUS_AXE_JS); screenshots are still saved",
                    axe_path().display()
                ),
            );
        }
        let screens = harness::screens_dir();
        std::fs::create_dir_all(&screens)
            .with_context(|| format!("creating {}", screens.display()))?;
        let mut problems = Vec::new();
        for (width_name, width, height) in WIDTHS {
            self.resize(width, height).await?;
            if let Some(axe) = axe {
                for v in self.axe_violations(axe).await? {
                    let impact = v["impact"].as_str().unwrap_or("unknown");
                    let mut text = vec![format!(
                        "  [{width_name} {width}px] axe {} ({impact}): {} <{}>",
                        text_of(&v, "id"),
                        text_of(&v, "help"),
                        text_of(&v, "helpUrl")
                    )];
                    for node in v["nodes"].as_array().into_iter().flatten() {
                        text.push(format!(
                            "      at {}: {}",
                            node["target"],
                            text_of(node, "html")
                        ));
                        for l in text_of(node, "failureSummary").lines() {
                            text.push(format!("        {l}"));
                        }
                    }
                    if FAILING_IMPACTS.contains(&impact) {
                        problems.push(text.join("\n"));
                    } else {
                        println!("{label}: minor (not failing):\n{}", text.join("\n"));
                    }
                }
            }
            if width_name == "phone" {
                let w = self
                    .client
                    .execute(WIDTH_SCRIPT, vec![])
                    .await
                    .context("measuring the page's width")?;
                let (scroll_width, inner_width) = (
                    w["scrollWidth"].as_f64().unwrap_or(f64::MAX),
                    w["innerWidth"].as_f64().unwrap_or(0.0),
                );
                if scroll_width > inner_width {
                    problems.push(format!(
                        "  [{width_name} {width}px] the page scrolls sideways: it is {scroll_width} px wide in a {inner_width} px window"
                    ));
                }
                for el in w["outside"].as_array().into_iter().flatten() {
                    problems.push(format!(
                        "  [{width_name} {width}px] out of the screen (reachable only by scrolling sideways): {}",
                        el.as_str().unwrap_or_default()
                    ));
                }
            }
            let png = screens.join(format!("{label}-{width_name}.png"));
            let shot = self.full_page_screenshot(width, height).await?;
            std::fs::write(&png, shot).with_context(|| format!("writing {}", png.display()))?;
        }
        println!(
            "{label}: {} at {}",
            if axe.is_some() {
                "axe and width checks run"
            } else {
                "width check run (axe SKIPPED)"
            },
            screens.join(format!("{label}-{{desktop,phone}}.png")).display()
        );
        Ok(problems)
    }

    /// Runs axe in the page (injecting it first if this page has not got
    /// it yet) and returns its violations.
    async fn axe_violations(&self, axe: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let present = self
            .client
            .execute("return typeof window.axe === 'object';", vec![])
            .await?;
        if present != json!(true) {
            self.client
                .execute(axe, vec![])
                .await
                .context("injecting axe-core into the page")?;
            let present = self
                .client
                .execute("return typeof window.axe === 'object';", vec![])
                .await?;
            if present != json!(true) {
                bail!("axe-core did not load into the page (window.axe is missing)");
            }
        }
        let answer = self
            .client
            .execute_async(
                "var done = arguments[arguments.length - 1];
                 window.axe.run(document, { resultTypes: ['violations'] })
                   .then(function (r) { done({ violations: r.violations }); },
                         function (e) { done({ error: String(e) }); });",
                vec![],
            )
            .await
            .context("running axe in the page")?;
        if let Some(error) = answer.get("error") {
            bail!("axe failed in the page: {error}");
        }
        match answer.get("violations") {
            Some(serde_json::Value::Array(violations)) => Ok(violations.clone()),
            _ => bail!("axe answered without a list of violations: {answer}"),
        }
    }

    /// Sets the viewport (not the window: headless Chromium may add to it)
    /// to `width` × `height` CSS pixels.
    async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.client
            .set_window_size(width, height)
            .await
            .with_context(|| format!("resizing the window to {width}×{height}"))?;
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await?;
        let (iw, ih) = (
            inner[0].as_u64().unwrap_or(0) as u32,
            inner[1].as_u64().unwrap_or(0) as u32,
        );
        if (iw, ih) != (width, height) {
            // The window's frame takes some room: make the window that much larger.
            let (w2, h2) = (width + width.saturating_sub(iw), height + height.saturating_sub(ih));
            self.client.set_window_size(w2, h2).await?;
            let inner = self
                .client
                .execute("return window.innerWidth;", vec![])
                .await?;
            if inner.as_u64() != Some(u64::from(width)) {
                bail!("cannot make the viewport {width} px wide (it is {inner} px)");
            }
        }
        Ok(())
    }

    /// A screenshot of the whole page at `width`: the window is made as
    /// tall as the page (at most 6000 px) for the shot, then set back.
    async fn full_page_screenshot(&self, width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
        let page_height = self
            .client
            .execute(
                "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);",
                vec![],
            )
            .await?
            .as_u64()
            .unwrap_or(u64::from(height));
        let tall = u32::try_from(page_height.clamp(u64::from(height), 6000)).unwrap_or(height);
        if tall > height {
            self.resize(width, tall).await?;
        }
        let shot = self.screenshot().await;
        if tall > height {
            self.resize(width, height).await?;
        }
        shot
    }
}
