module github.com/stt-operator/stt-operator/hack/argocd-lua

go 1.22

require github.com/yuin/gopher-lua v1.1.1
