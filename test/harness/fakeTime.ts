/** A clock that only moves when the code under test sleeps, recording each sleep. */
export function fakeTime(start: number): { state: { now: number; sleeps: number[] }; clock: () => number; sleep: (ms: number) => Promise<void> } {
  const state = { now: start, sleeps: [] as number[] };
  return {
    state,
    clock: () => state.now,
    sleep: async (ms: number) => {
      state.sleeps.push(ms);
      state.now += ms;
    },
  };
}
