module hydra/bench/chan

go 1.19
