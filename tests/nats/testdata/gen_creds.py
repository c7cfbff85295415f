# Writes a fixed JWT setup for the creds-file test (operator mode):
# operator.conf (server configuration lines: the operator's JWT, its system
# and "shop" accounts preloaded), shop.creds (a user of "shop") and
# stranger.creds (a user of an account the server does not know). Run once
# (python3 gen_creds.py, needs python3-cryptography); the outputs are
# checked in. No expiry: test keys, never used anywhere else.
import base64, hashlib, json, time
from gen_nkey import ACCOUNT, OPERATOR, USER, Key

def b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip('=')

def jwt(issuer, subject, name, nats):
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name,
              "sub": subject.public, "nats": nats}
    claims["jti"] = base64.b32encode(hashlib.sha256(
        json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip('=')
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = issuer.private.sign((head + "." + body).encode())
    return head + "." + body + "." + b64(signature)

UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1,
             "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}

def account(operator, name):
    key = Key(ACCOUNT)
    return key, jwt(operator, key, name, {"limits": UNLIMITED,
                    "type": "account", "version": 2})

def creds(account_key, name, path):
    user = Key(USER)
    token = jwt(account_key, user, name, {"pub": {}, "sub": {}, "subs": -1,
                "data": -1, "payload": -1, "type": "user", "version": 2})
    with open(path, "w") as out:
        out.write("-----BEGIN NATS USER JWT-----\n" + token +
                  "\n------END NATS USER JWT------\n\n"
                  "-----BEGIN USER NKEY SEED-----\n" + user.seed +
                  "\n------END USER NKEY SEED------\n")

operator = Key(OPERATOR)
system, system_jwt = account(operator, "SYS")
shop, shop_jwt = account(operator, "shop")
with open("operator.conf", "w") as out:
    out.write('operator: "' + jwt(operator, operator, "fnbus-test",
              {"type": "operator", "version": 2}) + '"\n'
              'system_account: ' + system.public + '\n'
              'resolver: MEMORY\n'
              'resolver_preload: {\n'
              '  ' + system.public + ': "' + system_jwt + '"\n'
              '  ' + shop.public + ': "' + shop_jwt + '"\n'
              '}\n')
creds(shop, "shop", "shop.creds")
other_operator = Key(OPERATOR)
stranger, _ = account(other_operator, "stranger")
creds(stranger, "stranger", "stranger.creds")
