/**
 * A runnable example of the reference client against a running gateway (see client/README.md):
 *
 *   npm start                                              # prints "dev API key ggk_..."
 *   GHOSTGATE_API_KEY=ggk_... npm run -s client:example     # in a second terminal
 *
 * It trades the API key for a short-lived token (POST /v1/token), streams one completion, then
 * starts a second one and cancels it after its first event, as an editor does when the user
 * types on. Env: GHOSTGATE_URL (default http://127.0.0.1:$GHOSTGATE_PORT, as the gateway reads it, else 8080), GHOSTGATE_API_KEY (required),
 * GHOSTGATE_MODEL (default ghost-small).
 */
import { GhostgateClient, GhostgateError } from './ghostgate-client.ts';

const url = process.env.GHOSTGATE_URL || `http://127.0.0.1:${process.env.GHOSTGATE_PORT || 8080}`;
const credential = process.env.GHOSTGATE_API_KEY;
const model = process.env.GHOSTGATE_MODEL || 'ghost-small';
if (!credential) {
  process.stderr.write('Set GHOSTGATE_API_KEY: `npm start` prints a dev API key in its banner ("dev API key ggk_...").\n');
  process.exit(2);
}

type Chunk = { choices?: Array<{ text?: string }> };
const gg = new GhostgateClient({ url, credential, headers: { 'editor-version': 'example/1.0.0', 'editor-plugin-version': 'ghostgate-example/1.0.0' } });
try {
  process.stdout.write(`completion of "def fib(": `);
  for await (const ev of gg.complete<Chunk>({ model, prompt: 'def fib(', max_tokens: 16 })) {
    process.stdout.write(ev.choices?.[0]?.text ?? '');
  }
  process.stdout.write('\n[done]\n');

  // The user typed on: cancel the completion in flight. Only that stream is reset (CANCEL);
  // the gateway cancels the model's work at once, and the session stays up for the next one.
  const ac = new AbortController();
  let events = 0;
  try {
    for await (const _ev of gg.complete<Chunk>({ model, prompt: 'class Tree:' }, { signal: ac.signal })) {
      if (++events === 1) ac.abort();
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  }
  process.stdout.write(`[cancelled after ${events} event${events === 1 ? '' : 's'}]\n`);
} catch (e) {
  const err = e as GhostgateError;
  process.stderr.write(`ghostgate answered ${err.status ?? ''} ${err.code ?? ''}: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  gg.close();
}
