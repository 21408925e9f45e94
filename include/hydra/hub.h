/* hydra/hub.h */
#ifndef HYDRA_HUB_H
#define HYDRA_HUB_H

#endif /* HYDRA_HUB_H */
