/**
 * One run at a time, for reloads (the gateway's and the cluster primary's): a call while a run is
 * going gets that run's promise and asks for one more run, with the latest trigger, once it ends
 * (`rerun`, which goes back through the caller's own checks, e.g. "shutting down"). Any number of
 * calls during a run make one more run, not one each.
 */
export class Coalesced<T> {
  readonly #run: (trigger: string) => Promise<T>;
  readonly #rerun: (trigger: string) => unknown;
  #running: Promise<T> | undefined;
  #again: string | undefined;

  constructor(run: (trigger: string) => Promise<T>, rerun: (trigger: string) => unknown) {
    this.#run = run;
    this.#rerun = rerun;
  }

  /** The run in progress, if any. */
  get running(): Promise<T> | undefined { return this.#running; }

  call(trigger: string): Promise<T> {
    if (this.#running) { this.#again = trigger; return this.#running; }
    this.#running = this.#run(trigger).finally(() => {
      this.#running = undefined;
      const again = this.#again;
      this.#again = undefined;
      if (again !== undefined) this.#rerun(again);
    });
    return this.#running;
  }
}
