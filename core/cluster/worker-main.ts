/** Entry point of a cluster worker process (forked by core/cluster/primary.ts). */
import { runWorker } from './worker.ts';

await runWorker();
