// Package containertest tests devid's packages in containers of devid's
// Debian images (package debimage: Debian 12 with OpenSSH 9.2, Debian 13
// with OpenSSH 10.0): that they install in a clean container and leave
// sshd's configuration alone, and that devid-ca's and devid-hostd's units
// work under a real systemd.
//
// The tests need a container engine (docker) and, the first time, root
// and debootstrap to build the images (make images builds them ahead); on
// a laptop without them they skip, with CI=true they fail. It has no code
// of its own.
package containertest
