// The dashboard's only script: a copy button for a new key, and keeping a
// reload of the page that showed the key from showing (or re-creating) it.
(function () {
  "use strict";
  var replace = document.getElementById("replace-url");
  if (replace && window.history && window.history.replaceState) {
    // A reload now loads the keys list instead of re-posting the form.
    window.history.replaceState(null, "", replace.getAttribute("data-url"));
  }
  // A form that may be sent once (it carries a single-use nonce: create
  // key, rotate key) restored from the back/forward cache would send its
  // used nonce again: load it afresh for a new one instead.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && document.querySelector("form[data-once]")) {
      window.location.reload();
    }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy-target"));
    var status = document.getElementById("copy-status");
    var text = source ? source.textContent : "";
    var done = function () { if (status) { status.textContent = "Copied."; } };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
    } else {
      selectText(source);
    }
  });
  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    var status = document.getElementById("copy-status");
    if (status) { status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy."; }
  }
})();
