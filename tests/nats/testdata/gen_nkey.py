# Writes an NKey user key pair: <name>.pub (U...) and <name>.nk (SU... seed).
import base64, os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc

def enc(raw):
    c = crc16(raw)
    return base64.b32encode(raw + bytes([c & 0xFF, c >> 8])).decode().rstrip('=')

USER = 20 << 3
SEED = 18 << 3
seed = os.urandom(32)
pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw)
name = sys.argv[1]
open(name + '.pub', 'w').write(enc(bytes([USER]) + pub) + '\n')
open(name + '.nk', 'w').write(enc(bytes([SEED | (USER >> 5), (USER & 31) << 3]) + seed) + '\n')
