/** Milliseconds since the epoch; injected so tests and the benchmark can move time. */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();
