module hydra/bench/events

go 1.19
