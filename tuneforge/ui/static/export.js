// Export page: while an export runs, poll its state and reload the page once it is done or failed
// (the page then shows the size table and the checks, or the output that says what went wrong).
const el = document.getElementById("export-status");
async function poll() {
  const r = await fetch(`/api/export/${encodeURIComponent(el.dataset.run)}`, {credentials: "same-origin"});
  if (r.ok) {
    const s = await r.json();
    if (s.status !== "running") { location.reload(); return; }
    const log = document.getElementById("export-log");
    if (log) log.textContent = s.log;
  }
  setTimeout(poll, 1000);
}
if (el && el.textContent === "running") setTimeout(poll, 1000);
