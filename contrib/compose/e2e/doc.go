// Package e2e drives contrib/compose's set, as a user would run it, on
// both of devid's Debian images (bookworm with OpenSSH 9.2, trixie with
// OpenSSH 10.0): a CA, two hosts and a workstation, each machine with its
// own software TPM, on a private network, devid installed from its
// packages. The story: enrolment by token, logins from the workstation to
// both hosts through devid-agent, renewals with sshd reloaded (short
// lifetimes), the CA stopped (logins go on) and started again (renewals
// resume), and a quarantine that reaches the connected host at once and a
// host cut off from the network (docker network disconnect) once it is
// back.
//
// It needs docker and docker-compose (or the docker compose plugin) and,
// the first time, root and debootstrap for the images (make images builds
// them ahead): without them it skips, with CI=true it fails. It has no
// code of its own.
package e2e
