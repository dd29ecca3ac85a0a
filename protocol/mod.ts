/** Wire formats: subjects, binary data frames, JSON schemas, error codes, limits. */
export * from "./errors.ts";
export * from "./frames.ts";
export * as limits from "./limits.ts";
export * from "./subjects.ts";
export * from "./control.ts";
export { RequestMux } from "./request_mux.ts";
export { crc32c } from "./crc32c.ts";
