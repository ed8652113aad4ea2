//! The accessibility check of a page: axe-core (pinned in
//! `tests/dashboard-a11y/package.json`, installed by `.ci/run`) run in the
//! page at desktop (1280×900) and phone (390×844) width, no sideways
//! scrolling at those widths and at 768 px, the contrast of field borders
//! and of the keyboard focus ring, and a screenshot of each width for
//! reviewers.
//!
//! axe is injected through WebDriver's Execute Script, which Chromium runs
//! outside the page's Content-Security-Policy (`script-src 'self'` would
//! refuse an injected `<script>`), so the page is checked as served.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::key::Key;
use serde_json::json;

use crate::harness;
use crate::pages::Browser;

/// The widths every page is checked at: (name, width, height) in CSS pixels.
pub const WIDTHS: [(&str, u32, u32); 2] = [("desktop", 1280, 900), ("phone", 390, 844)];

/// A width between the two where tables are not stacked yet but may not
/// fit: checked for sideways scrolling only (no axe, no screenshot).
const BETWEEN: (&str, u32, u32) = ("tablet", 768, 1024);

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

/// In-page helpers: a computed colour, the colour behind an element (the
/// first ancestor with an opaque background), and WCAG's contrast ratio.
const COLOUR_FUNCTIONS: &str = r#"
var rgb = function (s) {
  var m = /rgba?\(([^)]+)\)/.exec(s || '');
  if (!m) { return null; }
  var p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat);
  return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
};
var behind = function (el) {
  for (var n = el.parentElement; n; n = n.parentElement) {
    var c = rgb(getComputedStyle(n).backgroundColor);
    if (c && c.a > 0.99) { return c; }
  }
  return { r: 255, g: 255, b: 255, a: 1 };
};
var over = function (c, bg) {
  return { r: c.r * c.a + bg.r * (1 - c.a), g: c.g * c.a + bg.g * (1 - c.a), b: c.b * c.a + bg.b * (1 - c.a), a: 1 };
};
var lum = function (c) {
  var f = function (v) { v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
};
var ratio = function (a, b) {
  var x = lum(a), y = lum(b);
  return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
};
var css = function (c) { return 'rgb(' + [c.r, c.g, c.b].map(Math.round).join(', ') + ')'; };
var name = function (el) {
  var text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().replace(/\s+/g, ' ').slice(0, 40);
  return el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' "' + text + '"';
};
"#;

/// In-page: the borders of visible text fields and selects against what
/// surrounds them (outside) and their own background (inside), WCAG 1.4.11.
const FIELD_BORDER_SCRIPT: &str = r#"
var problems = [];
document.querySelectorAll('input:not([type=checkbox]):not([type=radio]):not([type=hidden]), select, textarea').forEach(function (el) {
  var r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) { return; }
  var st = getComputedStyle(el);
  var outside = behind(el);
  var inside = rgb(st.backgroundColor);
  inside = inside && inside.a > 0 ? over(inside, outside) : outside;
  var border = rgb(st.borderTopColor);
  if (!border || parseFloat(st.borderTopWidth) < 1 || st.borderTopStyle === 'none') {
    problems.push(name(el) + ' has no border');
    return;
  }
  border = over(border, outside);
  var worst = Math.min(ratio(border, outside), ratio(border, inside));
  if (worst < 3) {
    problems.push(name(el) + ': border ' + css(border) + ' has ' + worst.toFixed(2) + ':1 against ' + css(outside) + ' / ' + css(inside) + ' (needs 3:1)');
  }
});
return problems;
"#;

/// In-page: the focused element's focus ring (outline) against what is
/// behind it, as shown after a Tab press (`:focus-visible`).
const FOCUS_RING_SCRIPT: &str = r#"
var el = document.activeElement;
if (!el || el === document.body || el === document.documentElement) { return { done: true }; }
var st = getComputedStyle(el);
var ring = rgb(st.outlineColor);
var width = parseFloat(st.outlineWidth) || 0;
var problem = null;
if (st.outlineStyle === 'none' || width < 2 || !ring) {
  problem = name(el) + ' shows no focus ring of 2 px or more (outline: ' + st.outlineStyle + ' ' + st.outlineWidth + ')';
} else {
  var bg = behind(el);
  var c = ratio(over(ring, bg), bg);
  if (c < 3) {
    problem = name(el) + ': focus ring ' + css(ring) + ' has ' + c.toFixed(2) + ':1 against ' + css(bg) + ' (needs 3:1)';
  }
}
if (!el.dataset.a11yFocusSeen) { el.dataset.a11yFocusSeen = '1'; return { done: false, problem: problem }; }
return { done: true };
"#;

/// How many Tab presses the focus check follows at most on a page.
const MAX_TABS: usize = 40;

impl Browser {
    /// Checks the current page at desktop and phone width: no axe
    /// violation of impact critical, serious or moderate; at both (and at
    /// 768 px) no sideways scrolling of the page and every control within
    /// the screen; at desktop width, field borders and the focus ring of
    /// each control reached with Tab at 3:1 against their surroundings.
    /// Saves `target/dashboard-screens/<label>-desktop.png` and
    /// `<label>-phone.png` (the whole page's height). Fails with every
    /// problem found; restores the window size either way.
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
                     or set NOXUS_AXE_JS); the width and contrast checks and the screenshots still run",
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
            problems.extend(self.width_problems(width_name, width).await?);
            let png = screens.join(format!("{label}-{width_name}.png"));
            let shot = self.full_page_screenshot(width, height).await?;
            std::fs::write(&png, shot).with_context(|| format!("writing {}", png.display()))?;
            if width_name == "desktop" {
                // After the screenshot: tabbing leaves a focus ring and may scroll.
                for p in self.contrast_problems().await? {
                    problems.push(format!("  [{width_name} {width}px] {p}"));
                }
            }
        }
        // Between the two, where a table is too wide for the screen but not
        // yet stacked: only the width check.
        let (width_name, width, height) = BETWEEN;
        self.resize(width, height).await?;
        problems.extend(self.width_problems(width_name, width).await?);
        println!(
            "{label}: {} at {}",
            if axe.is_some() {
                "axe and width checks run"
            } else {
                "width and contrast checks run (axe SKIPPED)"
            },
            screens
                .join(format!("{label}-{{desktop,phone}}.png"))
                .display()
        );
        Ok(problems)
    }

    /// The width check at the current size: the page does not scroll
    /// sideways, and no visible control lies outside the screen.
    async fn width_problems(&self, width_name: &str, width: u32) -> anyhow::Result<Vec<String>> {
        let w = self
            .client
            .execute(WIDTH_SCRIPT, vec![])
            .await
            .context("measuring the page's width")?;
        let (scroll_width, inner_width) = (
            w["scrollWidth"].as_f64().unwrap_or(f64::MAX),
            w["innerWidth"].as_f64().unwrap_or(0.0),
        );
        let mut problems = Vec::new();
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
        Ok(problems)
    }

    /// Field borders, then the focus ring of each control reached with Tab
    /// from the top of the page (up to [`MAX_TABS`]), at 3:1 or more
    /// against what surrounds them (WCAG 1.4.11, which axe does not check).
    /// Leaves nothing focused and the page scrolled to the top.
    async fn contrast_problems(&self) -> anyhow::Result<Vec<String>> {
        let mut problems: Vec<String> = Vec::new();
        let fields = self
            .client
            .execute(&format!("{COLOUR_FUNCTIONS}{FIELD_BORDER_SCRIPT}"), vec![])
            .await
            .context("measuring the fields' borders")?;
        problems.extend(
            fields
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned)),
        );
        self.client
            .execute(
                "if (document.activeElement) { document.activeElement.blur(); }
                 document.querySelectorAll('[data-a11y-focus-seen]').forEach(function (e) { delete e.dataset.a11yFocusSeen; });
                 window.scrollTo(0, 0);",
                vec![],
            )
            .await?;
        let tab = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        let script = format!("{COLOUR_FUNCTIONS}{FOCUS_RING_SCRIPT}");
        for _ in 0..MAX_TABS {
            self.client
                .perform_actions(tab.clone())
                .await
                .context("pressing Tab")?;
            let answer = self
                .client
                .execute(&script, vec![])
                .await
                .context("measuring the focus ring")?;
            if answer["done"] == json!(true) {
                break;
            }
            if let Some(p) = answer["problem"].as_str() {
                problems.push(p.to_owned());
            }
        }
        self.client
            .execute(
                "if (document.activeElement) { document.activeElement.blur(); }
                 document.querySelectorAll('[data-a11y-focus-seen]').forEach(function (e) { delete e.dataset.a11yFocusSeen; });
                 window.scrollTo(0, 0);",
                vec![],
            )
            .await?;
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
            let (w2, h2) = (
                width + width.saturating_sub(iw),
                height + height.saturating_sub(ih),
            );
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
