// Arena: one prompt, streamed answers side by side (base, tuned and, with an index picked, base + RAG and
// tuned + RAG), read piece by piece. A RAG stream ends with "\x1e" and its sources as JSON.
const csrf = document.querySelector("meta[name=csrf]").content;
const MARK = "\x1e";

function showSources(system, list) {
  const ol = document.getElementById(`${system}-sources`);
  ol.replaceChildren(...list.map((s) => {
    const li = document.createElement("li");
    li.dataset.doc = s.doc_id;
    li.textContent = `${s.doc_id} (${s.score.toFixed(3)})${s.cited ? " cited" : ""}`;
    if (s.cited) li.className = "cited";
    return li;
  }));
}

async function stream(body) {
  const out = document.getElementById(`answer-${body.system}`);
  out.textContent = ""; out.dataset.done = "0"; out.dataset.chunks = "0";
  const r = await fetch("/api/arena", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)});
  if (!r.ok) { out.textContent = await r.text(); out.dataset.done = "error"; return; }
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    text += decoder.decode(value, {stream: true});
    out.textContent = text.split(MARK)[0];
    out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
  }
  if (text.includes(MARK)) showSources(body.system, JSON.parse(text.slice(text.indexOf(MARK) + 1)));
  out.dataset.done = "1";
}

document.getElementById("arena-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const run = document.getElementById("arena-run").value, prompt = document.getElementById("prompt").value;
  const index = document.getElementById("arena-index")?.value;
  stream({run, system: "base", prompt});
  stream({run, system: "tuned", prompt});
  for (const system of ["rag", "tuned_rag"]) {
    const out = document.getElementById(`answer-${system}`);
    if (index) stream({run, system, prompt, index});
    else if (out) { out.textContent = ""; out.dataset.done = "skipped"; document.getElementById(`${system}-sources`).replaceChildren(); }
  }
});
