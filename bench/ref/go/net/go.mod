module hydra/bench/net

go 1.19
