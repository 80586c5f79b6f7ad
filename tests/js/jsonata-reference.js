// Evaluates mapping chains with the reference JSONata implementation (the `jsonata` npm
// package). Reads [{"levels": ["expr", ...], "input": ...}, ...] on stdin and prints one
// result per chain: {"ok": value} (null for undefined) or {"error": "message"}.
// Used by tests/jsonata_reference.rs; NODE_PATH points at the installed package.
const jsonata = require('jsonata');

async function main() {
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  const chains = JSON.parse(text);
  const out = [];
  for (const c of chains) {
    try {
      let doc = c.input;
      for (const src of c.levels) {
        doc = await jsonata(src).evaluate(doc);
        if (doc === undefined) break;
      }
      out.push(doc === undefined ? { undefined: true } : { ok: doc });
    } catch (e) {
      out.push({ error: String(e.message || e) });
    }
  }
  process.stdout.write(JSON.stringify(out));
}

main();
