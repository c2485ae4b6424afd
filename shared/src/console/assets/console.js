// The console's only script: it shows times in the viewer's zone, refreshes the overview every
// few seconds and renders a template's preview as it is edited. Without it, times are UTC and a
// reload or the Preview button does the same.
"use strict";
(function () {
  // The server writes UTC; the title keeps it for hover.
  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const at = new Date(t.dateTime);
      if (!isNaN(at)) t.textContent = at.toLocaleString();
    }
  }
  localTimes(document);

  const live = document.getElementById("live");
  if (live && live.dataset.refresh) {
    setInterval(async function () {
      try {
        const response = await fetch(live.dataset.refresh, { credentials: "same-origin" });
        if (!response.redirected && response.ok) {
          live.innerHTML = await response.text();
          localTimes(live);
        }
      } catch (_) {
        // Offline for a moment: the next tick tries again.
      }
    }, 3000);
  }

  const editor = document.getElementById("template-form");
  const preview = document.getElementById("preview");
  if (editor && preview && editor.dataset.preview) {
    let timer = null;
    editor.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(async function () {
        const body = new URLSearchParams(new FormData(editor));
        try {
          const response = await fetch(editor.dataset.preview, {
            method: "POST", body: body, credentials: "same-origin",
          });
          if (!response.redirected && response.ok) preview.innerHTML = await response.text();
        } catch (_) {
          // The Preview button still works.
        }
      }, 300);
    });
  }
})();
