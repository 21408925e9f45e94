module hydra/bench/rt

go 1.19
