/** Seeded PRNG for tests: the same seed replays the same run. */
export { mulberry32, seededRandomPort } from "../../actors/seeded_random.ts";
