package config

import (
	"testing"
	"time"
)

func TestShownDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, ""}, {10 * time.Second, "10s"}, {500 * time.Millisecond, "500ms"}, {time.Minute, "1m"},
		{90 * time.Second, "1m30s"}, {time.Hour, "1h"}, {24 * time.Hour, "24h"}, {time.Hour + time.Second, "1h0m1s"},
	} {
		if got := shownDuration(tc.d); got != tc.want {
			t.Errorf("shownDuration(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// A declared setting reads through its declaration, with its default, its
// bounds and the effective configuration's record; a second declaration of
// one name is refused.
func TestDeclaredSettingReads(t *testing.T) {
	t.Parallel()
	n := Int("TEST_SETTING_N", 7, 1, 9, "test", "a number")
	d := Duration("TEST_SETTING_D", time.Second, time.Millisecond, time.Minute, "test", "a duration", DefaultShown("one second"))
	if s, ok := Lookup("TEST_SETTING_D"); !ok || !s.DefaultIsProse || s.Default != "one second" || s.Users != "test" {
		t.Fatalf("Lookup: %+v %v", s, ok)
	}
	env := FromMap(map[string]string{"TEST_SETTING_N": "12"})
	if got := n.Read(env); got != 7 || env.Err() == nil {
		t.Fatalf("out of bounds: %d, %v; want the default and an error", got, env.Err())
	}
	env = FromMap(map[string]string{"TEST_SETTING_N": "3"})
	if got, got2 := n.Read(env), d.Read(env); got != 3 || got2 != time.Second || env.Err() != nil {
		t.Fatalf("read %d %s %v", got, got2, env.Err())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a setting declared twice was accepted")
		}
	}()
	String("TEST_SETTING_N", "", "test", "again")
}
