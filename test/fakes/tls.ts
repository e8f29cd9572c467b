import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generate } from "selfsigned";

export interface TestCertificate {
  certPem: string;
  keyPem: string;
  /** Path of a PEM file holding certPem, for LOCAL_DEV_CA_CERT_FILE or NODE_EXTRA_CA_CERTS. */
  certFile: string;
}

/**
 * One self-signed certificate that is both the server certificate of every fake and the
 * CA clients trust. cA=true lets the same PEM go into `ca` options unchanged; the SAN
 * covers 127.0.0.1 because the fakes listen on that literal, and localhost for tools
 * that insist on a name.
 */
export async function createTestCertificate(): Promise<TestCertificate> {
  const notBeforeDate = new Date(Date.now() - 60_000); // tolerate small clock skew between processes
  const notAfterDate = new Date(notBeforeDate.getTime() + 365 * 24 * 3600 * 1000);
  const pems = await generate([{ name: "commonName", value: "localhost" }], {
    keySize: 2048,
    algorithm: "sha256",
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: "basicConstraints", cA: true },
      {
        name: "subjectAltName",
        altNames: [
          { type: 2, value: "localhost" },
          { type: 7, ip: "127.0.0.1" },
        ],
      },
    ],
  });
  const dir = await mkdtemp(join(tmpdir(), "fake-tls-"));
  const certFile = join(dir, "ca-cert.pem");
  await writeFile(certFile, pems.cert, { mode: 0o600 });
  return { certPem: pems.cert, keyPem: pems.private, certFile };
}
