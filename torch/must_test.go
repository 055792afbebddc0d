package torch

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestMust: a failure this package returned as an error (SetRNGState on a state of the
// wrong size, wrapped or not) comes back from Try as that same *Error; nil does nothing;
// an error without a *Error is not recovered by Try.
func TestMust(t *testing.T) {
	s := NewScope()
	defer s.Close()
	saved := RNGState(CPU)
	bad := FromUint8([]uint8{1, 2, 3}, 3)
	err := SetRNGState(CPU, bad)
	var te *Error
	if !errors.As(err, &te) || te.Op != "set_rng_state" {
		t.Fatalf("SetRNGState on 3 bytes: %v, want a *Error of set_rng_state", err)
	}
	if err := SetRNGState(CPU, saved); err != nil {
		t.Fatal(err)
	}
	for _, in := range []error{err, fmt.Errorf("restoring the generator: %w", err)} {
		got := Try(func() { Must(in) })
		if got != te {
			t.Errorf("Must(%v): Try gave %v, want the *Error SetRNGState returned", in, got)
		}
	}
	if got := Try(func() { Must(nil) }); got != nil {
		t.Errorf("Must(nil): %v", got)
	}
	plain := errors.New("not torch's")
	func() {
		defer func() {
			if r := recover(); r != plain {
				t.Errorf("Must(plain error): recovered %v, want the error itself past Try", r)
			}
		}()
		err := Try(func() { Must(plain) })
		t.Errorf("Must(plain error): Try returned %v instead of letting the panic go on", err)
	}()
	if !strings.Contains(te.Error(), "set_rng_state") {
		t.Errorf("error text %q does not name the operation", te.Error())
	}
}
