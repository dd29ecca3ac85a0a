/**
 * Optional native libraries through Deno's FFI. Each caller has a fallback, so a
 * missing library or a process without FFI permission is not an error.
 */

/** The library with these symbols, or null when it cannot be loaded here. */
export function openNativeLibrary<S extends Deno.ForeignLibraryInterface>(
  name: string,
  symbols: S,
): Deno.DynamicLibrary<S> | null {
  try {
    // Asking first: dlopen without the permission would prompt on a terminal.
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    return Deno.dlopen(name, symbols);
  } catch {
    return null;
  }
}
