module github.com/buddytok/buddytok/web

go 1.26.0
