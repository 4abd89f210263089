"""Development TLS certificates for a ZEO server with client-certificate authentication.

:func:`make_dev_certs` writes, into one directory:

* ``ca.pem`` / ``ca-key.pem``: a private certificate authority;
* ``server.pem`` / ``server-key.pem``: the server's certificate for ``127.0.0.1``,
  ``::1`` and ``localhost`` (IP and DNS subject alternative names, so the client's
  hostname check passes);
* ``client.pem`` / ``client-key.pem``: a client certificate.

Both certificates are signed by the CA.  ``zeo_configs/zeo-tls.conf`` uses the
server pair and trusts the CA for client certificates; a client uses the client
pair and trusts the CA for the server certificate::

    zpydb.connect("zeo://127.0.0.1:8100", tls_cert="certs/client.pem",
                  tls_key="certs/client-key.pem", tls_ca="certs/ca.pem")

The certificates satisfy OpenSSL's ``VERIFY_X509_STRICT`` (ZEO turns it on):
the CA has critical basic constraints and key usage, every certificate has subject
and authority key identifiers.  Keys are unencrypted EC P-256 keys written with
mode 0600.  These are for development and tests; for production use your
organisation's CA.
"""

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Certificates are valid from one day ago (clock skew) for this many days.
VALID_DAYS = 825

SERVER_DNS_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zpydb development"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _validity(builder):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


def _make_ca(common_name):
    key = _new_key()
    name = _name(common_name)
    builder = _validity(x509.CertificateBuilder()
                        .subject_name(name).issuer_name(name)
                        .public_key(key.public_key())
                        .serial_number(x509.random_serial_number()))
    builder = (builder
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=True,
                   crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    return key, builder.sign(key, hashes.SHA256())


def _make_leaf(ca_key, ca_cert, common_name, *, server):
    key = _new_key()
    builder = _validity(x509.CertificateBuilder()
                        .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
                        .public_key(key.public_key())
                        .serial_number(x509.random_serial_number()))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (builder
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=True, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                   critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(
                   x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                   critical=False))
    if server:
        names = [x509.DNSName(n) for n in SERVER_DNS_NAMES]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_cert(path, cert):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _write_key(path, key):
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    # Create with 0600 from the start so the key is never readable by others.
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
    os.chmod(path, 0o600)


def make_dev_certs(directory, prefix="", server=True, client_name="zpydb client"):
    """Create a development CA, a server and a client certificate in ``directory``.

    ``prefix`` is put before every file name (``prefix="other-"`` gives
    ``other-ca.pem``, ``other-client.pem``, ...), so a second, unrelated CA can
    live beside the first, e.g. to test that the server refuses client
    certificates it did not sign.  ``server=False`` skips the server pair.

    Returns a dict of absolute paths with keys ``ca``, ``ca_key``, ``client``,
    ``client_key`` and, unless ``server=False``, ``server`` and ``server_key``.
    Existing files of the same names are replaced.
    """
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}

    def path(kind, name):
        paths[kind] = str(directory / f"{prefix}{name}")
        return directory / f"{prefix}{name}"

    ca_key, ca_cert = _make_ca(f"zpydb development CA {prefix}".strip())
    _write_cert(path("ca", "ca.pem"), ca_cert)
    _write_key(path("ca_key", "ca-key.pem"), ca_key)
    if server:
        key, cert = _make_leaf(ca_key, ca_cert, "localhost", server=True)
        _write_cert(path("server", "server.pem"), cert)
        _write_key(path("server_key", "server-key.pem"), key)
    key, cert = _make_leaf(ca_key, ca_cert, client_name, server=False)
    _write_cert(path("client", "client.pem"), cert)
    _write_key(path("client_key", "client-key.pem"), key)
    return paths


def make_other_ca(directory, prefix="other-"):
    """An unrelated CA and a client certificate it signed (no server pair).

    A server configured with :func:`make_dev_certs`'s CA must refuse this client.
    """
    return make_dev_certs(directory, prefix=prefix, server=False,
                          client_name="zpydb client of another CA")
