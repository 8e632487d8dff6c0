package caserver

import (
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

// countingDB is the store as devid's packages (inventory, Attestation CA,
// revocation) and ACME's use it, counting every operation that fails with
// anything but "not found" (devid_ca_store_errors_total, by op).
type countingDB struct {
	nosql.DB
	failed func(op string)
}

func (d countingDB) count(op string, err error) error {
	if err != nil && !database.IsErrNotFound(err) {
		d.failed(op)
	}
	return err
}

func (d countingDB) Get(bucket, key []byte) ([]byte, error) {
	v, err := d.DB.Get(bucket, key)
	return v, d.count("get", err)
}

func (d countingDB) Set(bucket, key, value []byte) error {
	return d.count("set", d.DB.Set(bucket, key, value))
}

func (d countingDB) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	v, ok, err := d.DB.CmpAndSwap(bucket, key, oldValue, newValue)
	return v, ok, d.count("cmp_and_swap", err)
}

func (d countingDB) Del(bucket, key []byte) error {
	return d.count("del", d.DB.Del(bucket, key))
}

func (d countingDB) List(bucket []byte) ([]*database.Entry, error) {
	v, err := d.DB.List(bucket)
	return v, d.count("list", err)
}

func (d countingDB) Update(tx *database.Tx) error {
	return d.count("update", d.DB.Update(tx))
}

func (d countingDB) CreateTable(bucket []byte) error {
	return d.count("create_table", d.DB.CreateTable(bucket))
}

func (d countingDB) DeleteTable(bucket []byte) error {
	return d.count("delete_table", d.DB.DeleteTable(bucket))
}

func isNotFound(err error) bool { return err != nil && database.IsErrNotFound(err) }
