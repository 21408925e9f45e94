/* hydra/net.h */
#ifndef HYDRA_NET_H
#define HYDRA_NET_H

#endif /* HYDRA_NET_H */
