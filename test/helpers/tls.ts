import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Why the HTTPS tests cannot run here (a skip reason), or false when the openssl command line is available. */
export const opensslMissing: string | false = (() => {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return false;
  } catch {
    return "the openssl command line is not available here: the HTTPS tests need it to make a test certificate";
  }
})();

/** A self-signed certificate for localhost and 127.0.0.1, made with openssl in a temp dir. */
export function makeCertificate(): { dir: string; cert: string; key: string; pem: string } {
  const dir = mkdtempSync(join(tmpdir(), "lucena-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      key,
      "-out",
      cert,
    ],
    { stdio: "ignore" },
  );
  return { dir, cert, key, pem: readFileSync(cert, "utf8") };
}
