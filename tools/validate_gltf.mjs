// Validate a .glb/.gltf file with the Khronos glTF validator; print its report as JSON on stdout.
// Usage: node tools/validate_gltf.mjs FILE.glb   (exit 0 when there are no errors, 1 otherwise, 2 on bad usage)
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");

const file = process.argv[2];
if (!file) {
  console.error("usage: node tools/validate_gltf.mjs FILE.glb");
  process.exit(2);
}
const data = new Uint8Array(await readFile(file));
const dir = path.dirname(file);
const report = await validator.validateBytes(data, {
  uri: path.basename(file),
  maxIssues: 100,
  externalResourceFunction: (uri) =>
    readFile(path.resolve(dir, decodeURIComponent(uri))).then((b) => new Uint8Array(b)),
});
console.log(JSON.stringify(report));
process.exit(report.issues.numErrors === 0 ? 0 : 1);
