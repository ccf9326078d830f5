/**
 * Splits an SSE byte stream into `data:` payloads, only for pipelines with a step that asked for
 * events (`responseEvent`). The bytes are relayed untouched either way: no re-chunking.
 */
import { StringDecoder } from 'node:string_decoder';

export class SseSplitter {
  #decoder = new StringDecoder('utf8');
  #buf = '';
  #data: string[] = [];
  #onEvent: (data: string) => void;

  constructor(onEvent: (data: string) => void) { this.#onEvent = onEvent; }

  push(chunk: Buffer): void {
    this.#buf += this.#decoder.write(chunk);
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) !== -1) {
      let line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (this.#data.length) { const d = this.#data.join('\n'); this.#data = []; this.#onEvent(d); }
      } else if (line.startsWith('data:')) {
        this.#data.push(line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5));
      }
    }
  }
}
