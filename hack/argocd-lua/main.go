// argocd-lua runs one Argo CD resource-customization script (health.lua, discovery.lua or an
// action.lua) the way Argo CD does: gopher-lua, the base/package/table/string/math libraries, an
// os table reduced to time and date, the object from stdin (JSON) as the global `obj`. It prints
// what the script returns, as JSON. Used by tests/unit/test_argocd_lua.py next to the lupa runner.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	lua "github.com/yuin/gopher-lua"
)

func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []interface{}:
		t := L.NewTable()
		for _, item := range x {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.NewTable()
		for k, item := range x {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	}
	panic(fmt.Sprintf("unsupported JSON value %T", v))
}

func fromLua(v lua.LValue) interface{} {
	switch x := v.(type) {
	case lua.LBool:
		return bool(x)
	case lua.LNumber:
		return float64(x)
	case lua.LString:
		return string(x)
	case *lua.LTable:
		n := x.MaxN()
		keys := 0
		x.ForEach(func(lua.LValue, lua.LValue) { keys++ })
		if n > 0 && n == keys {
			out := make([]interface{}, 0, n)
			for i := 1; i <= n; i++ {
				out = append(out, fromLua(x.RawGetInt(i)))
			}
			return out
		}
		out := map[string]interface{}{}
		x.ForEach(func(k, val lua.LValue) { out[k.String()] = fromLua(val) })
		return out
	}
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua SCRIPT < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var obj interface{}
	if err := json.NewDecoder(os.Stdin).Decode(&obj); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	libs := map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage, lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable,
		lua.StringLibName: lua.OpenString, lua.MathLibName: lua.OpenMath, lua.OsLibName: lua.OpenOs,
	}
	names := make([]string, 0, len(libs))
	for name := range libs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		L.Push(L.NewFunction(libs[name]))
		L.Push(lua.LString(name))
		L.Call(1, 0)
	}
	if err := L.DoString("local t, d = os.time, os.date; os = {time = t, date = d}; io = nil; dofile = nil; loadfile = nil"); err != nil {
		panic(err)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(string(script)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.Marshal(fromLua(L.Get(-1)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
