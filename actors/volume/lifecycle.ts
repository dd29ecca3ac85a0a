/**
 * The volume actor's lifecycle as a pure transition table. The shell (actor.ts)
 * asks `nextState` for every change, so a state can only move along an edge
 * listed here, and only `serving` admits client IO.
 *
 *   taking-over --reconciled--> serving --handoff-begun--> handing-off --handoff-recorded--> stopped
 *        |                        |  \--stop-begun--> stopping --drained--> stopped
 *        |--term-lost--> stopped  |
 *   (any live state) --fenced--> fenced   (a newer owner or term exists: answer MOVED, do nothing)
 *   handing-off --handoff-failed--> serving   (the CAS did not happen; nothing moved)
 */
export type VolumeActorState =
  | "taking-over"
  | "serving"
  | "handing-off"
  | "stopping"
  | "stopped"
  | "fenced";

export type LifecycleEvent =
  | "reconciled"
  | "term-lost"
  | "handoff-begun"
  | "handoff-recorded"
  | "handoff-failed"
  | "stop-begun"
  | "drained"
  | "fenced";

const transitions: Record<VolumeActorState, Partial<Record<LifecycleEvent, VolumeActorState>>> = {
  "taking-over": {
    reconciled: "serving",
    "term-lost": "stopped",
    "stop-begun": "stopping",
    fenced: "fenced",
  },
  serving: { "handoff-begun": "handing-off", "stop-begun": "stopping", fenced: "fenced" },
  "handing-off": {
    "handoff-recorded": "stopped",
    "handoff-failed": "serving",
    fenced: "fenced",
  },
  stopping: { drained: "stopped", fenced: "fenced" },
  stopped: {},
  fenced: {},
};

export class IllegalTransitionError extends Error {
  override name = "IllegalTransitionError";
}

/** The state after `event`; throws on an edge that does not exist (a bug in the shell). */
export function nextState(state: VolumeActorState, event: LifecycleEvent): VolumeActorState {
  const next = transitions[state][event];
  if (!next) throw new IllegalTransitionError(`volume actor: no "${event}" edge from ${state}`);
  return next;
}

/** Whether an event is possible from this state (for events that may race with a stop). */
export function canHappen(state: VolumeActorState, event: LifecycleEvent): boolean {
  return transitions[state][event] !== undefined;
}

/** Only a serving actor answers client IO; every other state answers MOVED. */
export function admitsIo(state: VolumeActorState): boolean {
  return state === "serving";
}

/** No further transition is possible: the supervisor may forget this actor. */
export function isFinal(state: VolumeActorState): boolean {
  return state === "stopped" || state === "fenced";
}
