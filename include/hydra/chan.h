/* hydra/chan.h */
#ifndef HYDRA_CHAN_H
#define HYDRA_CHAN_H

#endif /* HYDRA_CHAN_H */
