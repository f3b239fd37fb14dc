// Arena: one prompt, two streamed answers (base and tuned) side by side, read piece by piece.
const csrf = document.querySelector("meta[name=csrf]").content;

async function stream(run, system, prompt) {
  const out = document.getElementById(`answer-${system}`);
  out.textContent = ""; out.dataset.done = "0"; out.dataset.chunks = "0";
  const r = await fetch("/api/arena", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({run, system, prompt})});
  if (!r.ok) { out.textContent = await r.text(); out.dataset.done = "error"; return; }
  const reader = r.body.getReader(), decoder = new TextDecoder();
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    out.textContent += decoder.decode(value, {stream: true});
    out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
  }
  out.dataset.done = "1";
}

document.getElementById("arena-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const run = document.getElementById("arena-run").value, prompt = document.getElementById("prompt").value;
  stream(run, "base", prompt);
  stream(run, "tuned", prompt);
});
