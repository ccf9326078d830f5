/**
 * The two instant answerers of the e2e check, in one child process: the bundled model server
 * (ghostgate's upstream, no simulated time to first token) and the minimal stand-in. So the path
 * through ghostgate has exactly one more process than the stand-in's, ghostgate itself: on a
 * busy machine each extra process costs scheduling delay, and the comparison is about ghostgate.
 *
 * Reads `{key, cert, tokens}` as JSON on argv[2]; prints one line
 * `{"event":"ready","model":url,"standIn":{"url","tlsUrl"}}`; stops on SIGTERM.
 * The stand-in's count of completions is at `GET {standIn.url}/_count`.
 */
import { startModelServer } from '../../model-server/server.ts';
import { startStandIn } from './stand-in.ts';

const o = JSON.parse(process.argv[2] ?? '{}') as { key: string; cert: string; tokens: number };
const model = await startModelServer({ port: 0, ttftMs: 0, tokenMs: 0, tokens: o.tokens });
const standIn = await startStandIn({ key: o.key, cert: o.cert });
process.stdout.write(JSON.stringify({ event: 'ready', model: model.url, standIn: { url: standIn.url, tlsUrl: standIn.tlsUrl } }) + '\n');
const stop = (): void => { void Promise.allSettled([model.close(), standIn.close()]).then(() => process.exit(0)); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
