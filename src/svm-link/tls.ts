/**
 * Which TLS handshake failures are configuration (final) rather than a network hiccup (retry).
 * Codes are OpenSSL's verify results as Node reports them (`err.code`), and the TLS alerts a
 * server sends when it refuses a client certificate (RFC 8446 §4.4.2.4: certificate_required).
 */
import { SvmTlsError } from '../errors.js';

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const CLIENT_CERT_REFUSED =
  // eslint-disable-next-line @stylistic/max-len -- one alternation of OpenSSL alert names reads best on one line
  /ALERT_CERTIFICATE_REQUIRED|ALERT_BAD_CERTIFICATE|ALERT_UNKNOWN_CA|ALERT_HANDSHAKE_FAILURE|ALERT_CERTIFICATE_UNKNOWN|ALERT_CERTIFICATE_EXPIRED|ALERT_ACCESS_DENIED/;

const NO_CLIENT_CERT = 'this agent: it requires a client certificate (mutual TLS) and none is configured';

export function tlsFailure(url: string, err: Error, ctx: { pinned: boolean; clientCert: boolean }): SvmTlsError | undefined {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (UNTRUSTED.has(code)) {
    const what =
      code === 'ERR_TLS_CERT_ALTNAME_INVALID'
        ? 'a certificate for another name'
        : code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID'
          ? 'a certificate outside its validity dates'
          : ctx.pinned
            ? 'a certificate the pinned CA did not sign'
            : 'a certificate no system CA signed';
    return new SvmTlsError(
      'LA_ERR_TLS_UNTRUSTED',
      `the SVM at ${url} presented ${what} (${code}: ${err.message}); the connection was refused`,
      ctx.pinned
        ? 'check that `ca:` in the agent config is the CA that signed the SVM certificate (and that the URL host is in its subjectAltName)'
        : 'pin the SVM CA with `ca:` in the agent config',
      { cause: err },
    );
  }
  if (CLIENT_CERT_REFUSED.test(code)) {
    return new SvmTlsError(
      'LA_ERR_TLS_CLIENT_CERT',
      `the SVM at ${url} refused ` + `${ctx.clientCert ? "this agent's client certificate" : NO_CLIENT_CERT} ` + `(${code})`,
      ctx.clientCert
        ? 'check that `tls_cert`/`tls_key` hold a certificate signed by the CA the SVM trusts for agents, and that it has not expired'
        : "set `tls_cert` and `tls_key` in the agent config to this agent's certificate and key",
      { cause: err },
    );
  }
  return undefined;
}
