# Writes an NKey user key pair: <name>.pub (U...) and <name>.nk (SU... seed).
# python3 gen_nkey.py shop_user; python3 gen_nkey.py stranger (needs
# python3-cryptography). The outputs are checked in: fixed test keys.
# gen_creds.py imports Key from here.
import base64, os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

OPERATOR, ACCOUNT, USER, SEED = 14 << 3, 0, 20 << 3, 18 << 3

def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc

def b32(raw):
    c = crc16(raw)
    return base64.b32encode(raw + bytes([c & 0xFF, c >> 8])).decode().rstrip('=')

class Key:
    """A new Ed25519 NKey of one kind (OPERATOR, ACCOUNT or USER)."""
    def __init__(self, prefix):
        self.raw = os.urandom(32)
        self.private = Ed25519PrivateKey.from_private_bytes(self.raw)
        pub = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = b32(bytes([prefix]) + pub)
        self.seed = b32(bytes([SEED | (prefix >> 5), (prefix & 31) << 3]) + self.raw)

if __name__ == "__main__":
    key = Key(USER)
    open(sys.argv[1] + '.pub', 'w').write(key.public + '\n')
    open(sys.argv[1] + '.nk', 'w').write(key.seed + '\n')
