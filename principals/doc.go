// Package principals decides which SSH logins a host accepts: from the local
// account, the user certificate sshd was offered and a local policy file, it
// says whether the login is allowed and which principal devid-principals,
// sshd's AuthorizedPrincipalsCommand, prints to allow it.
//
// # The policy
//
// The policy file (DefaultPath, /etc/devid/principals.conf) is read at every
// login. Each line names a local account and the principals a certificate
// must all carry to log in to it:
//
//	# account   principals the certificate must all carry
//	admin       group:sre collection:sre-laptops
//	deploy      urn:ek:sha256:q1w2e3r4t5y6u7i8o9p0q1w2e3r4t5y6u7i8o9p0q1w=
//	*           login:{account}
//
// Lines are tried from top to bottom. The first whose account matches (`*`
// matches any account) and whose principals are all in the certificate
// allows the login, and the helper prints the certificate's device-ID
// principal, which sshd then finds in the certificate and accepts. If no
// line matches, nothing is printed and sshd refuses the certificate. In a
// principal, {account} stands for the local account being logged in to; it
// is the only placeholder.
//
// Fields are separated by spaces and tabs. A field that starts with # starts
// a comment that runs to the end of the line; blank lines are skipped.
//
// Parsing is strict, and a policy with any error allows nobody in. Errors
// name the file and line (ParseError), for example
//
//	principals.conf:3: unknown placeholder {user} (the only one is {account})
//
// These are errors:
//   - bytes that are not UTF-8, control characters (a CRLF line ending too),
//     invisible formatting characters (U+200B, U+202E, a byte-order mark),
//     white space other than space and tab;
//   - an account without principals;
//   - an account that is neither * nor a login name: letters, digits and
//     . _ - @ (sssd's user@domain), not starting with -, optionally ending
//     in $ (Samba machine accounts); no patterns such as adm*;
//   - a placeholder in the account field, an unknown {placeholder}, { or }
//     that do not pair up;
//   - a principal listed twice on a line;
//   - a principal that starts like a device ID (urn:ek:) but is not one, so
//     that a mistyped device ID is caught instead of never matching;
//   - a field that looks like an option, NAME=… with no colon before the =
//     (from=10.0.0.0/8): kept free for the options below.
//
// Lines that can never allow a login are not errors, since they change
// nothing about who gets in and a fleet should not be locked out over
// them, but Policy.Warnings reports them (devid-principals check prints
// them): a line identical to an earlier one, and a line shadowed by an
// earlier one that matches every login it would (same account or *, and a
// subset of its principals). An empty policy denies everything; that too is
// a warning.
//
// LoadPolicy also refuses, like sshd's StrictModes, a file that others could
// have changed: one that is not a regular file, is writable by group or
// others, or is owned by someone other than root or the reading user. It
// refuses files over MaxPolicySize.
//
// # Two ways to decide
//
// LoadPolicy and ParsePolicy build a Policy, whose Decide, Explain and
// Warnings serve devid-principals check and explain. DecideFile is what the
// helper runs at every login: the same checks and the same decision in one
// pass over the file, read in small chunks, allocating nothing per line,
// since each login waits for it. A fuzz test holds the two to the same
// answers.
//
// # The certificate
//
// sshd has checked the certificate's signature, validity period, the
// TrustedUserCAKeys and the KRL before it runs the helper, and passes it as
// %t (its type) and %k (base64). ParseCertificate reads the fields the
// decision needs (PROTOCOL.certkeys) without verifying anything again, and
// without golang.org/x/crypto/ssh, whose import of package net would link
// the helper against the C library and slow every login down. What devid's
// CA guarantees is checked by Certificate.DeviceID: a user certificate, with
// exactly one device-ID principal (urn:ek:sha256:…, see package deviceid),
// whose key ID is that same device ID. A certificate that fails any of these
// is denied whatever the policy says.
//
// # Room to grow
//
// The policy leaves room for per-line options in the same spirit: source
// address limits like authorized_keys' from=, forced commands, time windows.
// Fields of the form NAME=… are rejected today, so giving them a meaning
// later changes no policy that parses now.
package principals
