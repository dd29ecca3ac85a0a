export { defaultMinInSync, PlacementActor, volumeInfo } from "./actor.ts";
export * from "./rendezvous.ts";
