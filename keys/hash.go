package keys

import "crypto"

import _ "crypto/sha256" // register SHA-256 for thumbprints

const cryptoSHA256 = crypto.SHA256
